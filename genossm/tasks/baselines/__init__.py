"""Reference points the models are compared with: Markov models and composition entropy (bits per base),
the linear probe on frozen embeddings and the k-mer baseline (region tasks). Their options (``baselines:``,
``kmer:``) are :class:`genossm.options.BaselineOptions` and :class:`genossm.options.KmerOptions`."""

from genossm.options import BaselineOptions, KmerOptions
from genossm.tasks.baselines.kmer import kmer_baseline, kmer_features
from genossm.tasks.baselines.linear import LinearModel, class_weights, fit_linear
from genossm.tasks.baselines.markov import MarkovBaseline, baseline_report, composition_entropy

__all__ = ["MarkovBaseline", "baseline_report", "composition_entropy", "LinearModel", "class_weights", "fit_linear",
           "kmer_baseline", "kmer_features", "BaselineOptions", "KmerOptions"]
