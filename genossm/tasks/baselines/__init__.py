"""Reference points the models are compared with: Markov models and composition entropy (bits per base),
the linear probe on frozen embeddings and the k-mer baseline (region tasks); and the option groups of the
``baselines:`` and ``kmer:`` config nodes."""

from __future__ import annotations

from dataclasses import dataclass

from genossm.options import Options, size
from genossm.tasks.baselines.kmer import kmer_baseline, kmer_features
from genossm.tasks.baselines.linear import LinearModel, class_weights, fit_linear
from genossm.tasks.baselines.markov import MarkovBaseline, baseline_report, composition_entropy


@dataclass
class BaselineOptions(Options):
    """The Markov baselines a model's bits per base are compared with (``baselines:`` of pretrain, evaluate
    and evaluate-variants)."""

    enabled: bool = True
    """Fit and report them (pretrain, evaluate)."""
    max_order: int = size(8, minimum=0)
    """Markov orders 0..max_order are fitted (evaluate-variants chooses one of them on the reference)."""
    pseudocount: float = 1.0
    """Added to every count (1: add-one smoothing)."""
    max_train_bases: int = size(200_000_000)
    """At most this many bases are counted."""


@dataclass
class KmerOptions(Options):
    """The k-mer count baseline of a region task (``kmer:`` of finetune)."""

    enabled: bool = True
    """Fit it beside the model."""
    k: int = size(4)
    """The k-mer length."""
    canonical: bool = False
    """Also count each k-mer's reverse complement (strand-symmetric features)."""


__all__ = ["MarkovBaseline", "baseline_report", "composition_entropy", "LinearModel", "class_weights", "fit_linear",
           "kmer_baseline", "kmer_features", "BaselineOptions", "KmerOptions"]
