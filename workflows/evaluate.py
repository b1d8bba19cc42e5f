"""genossm evaluate: bits per base of a saved model on any FASTA, beside Markov baselines; conf/evaluate.yaml.

compose (Hydra) -> instantiate the windows (tiles of the genome, its contigs or BED regions), the masked-LM
task around the saved model and the Trainer -> test (the validation path of pretraining: the same masks,
the same metric) -> write ``evaluation.json``, ``evaluation.tsv`` and ``config.yaml`` into ``output``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from omegaconf import DictConfig

from genossm.atomic import atomic_write, check_writable
from genossm.checksums import file_sha256
from genossm.config import save_config
from genossm.errors import GenossmError
from genossm.options import BaselineOptions, RunOptions, group, size
from genossm.paths import conf_dir
from genossm.workflows import user_errors

if TYPE_CHECKING:
    from genossm.data.windows import TiledWindows

# torch, Lightning and the data modules are imported inside the functions that use them: the run says what it
# does (its first log line) before it loads them

log = logging.getLogger("genossm.evaluate")

EVAL_WINDOW = 1024  # window_len when neither window_len= nor the model names one (no cap on the model's own)


@dataclasses.dataclass
class EvaluateOptions(RunOptions):
    """The options of ``genossm evaluate`` (``conf/evaluate.yaml``), checked when made."""

    pretrained: str | None = None
    """The model: an exported folder, a pretraining ``.ckpt``, ``bundled:NAME`` or ``hf:ORG/NAME``."""
    fasta: str | list[str] | None = None
    """The genome to evaluate on (plain, gzip, bgzip), or a list of files whose contigs together form it."""
    contigs: str | list[str] | None = None
    """Only these contigs (names or aliases, or a regular expression)."""
    regions: str | None = None
    """Only the intervals of this BED file."""
    output: str | None = None
    """The folder ``evaluation.json``, ``evaluation.tsv`` and ``config.yaml`` are written to."""
    window_len: int | None = size(None, null=True)
    """Bases per window; null: the length the model was trained at (1024 when it records none)."""
    batch_size: int = size(8)
    """Windows per batch."""
    max_windows: int | None = size(256, null=True)
    """Evenly spread tiles of the genome; null: every window."""
    max_n_fraction: float = 0.5
    """Windows with more N than this are skipped."""
    mask_prob: float = 0.15
    """The fraction of bases scored per pass (each masked and predicted from both sides)."""
    passes: int = size(1)
    """Independent maskings of every window."""
    device: str | None = None
    """Short for the trainer's device: ``cpu``, ``cuda`` or ``cuda:N`` (null: the trainer group's)."""
    cache_dir: str | None = None
    """Where the token cache goes when the FASTA's folder is read-only."""
    baseline_fasta: str | list[str] | None = None
    """The genome the Markov baselines are fitted on (default: the model's training genome when it is here)."""
    baselines: BaselineOptions = group(BaselineOptions)
    """The Markov baselines reported beside the model."""

    def describe(self) -> str:
        """One line saying what the run evaluates (the run's first log line)."""
        where = f" (regions {self.regions})" if self.regions else ""
        where += f" (contigs {self.contigs})" if self.contigs else ""
        return f"evaluate: the model {self.pretrained} on {self.fasta}{where}, writing {self.output}"


def training_genome_here(model_extra: dict) -> tuple[str | list[str] | None, str]:
    """The model's training genome when its files are here and are it, and a note saying how that was known.

    A model records its training genome's path (a bundled model: the file name only, found in the working
    folder) and, when it can, the files' SHA-256 (``fasta_sha256``): a file of that name or at that path with
    other content (another genome, a replaced file) is not the training genome."""
    from genossm.data.token_cache import fasta_value

    recorded = model_extra.get("fasta")
    if not recorded:
        return None, ""
    paths = [recorded] if isinstance(recorded, str) else list(recorded)
    if not all(Path(p).is_file() for p in paths):
        return None, f"; the model's training genome ({', '.join(Path(p).name for p in paths)}) is not here"
    sha = model_extra.get("fasta_sha256")
    if sha is None:
        return fasta_value(recorded), " (not checked: the model records no SHA-256 of it)"
    shas = [sha] if isinstance(sha, str) else list(sha)
    if len(shas) != len(paths) or any(file_sha256(p) != s for p, s in zip(paths, shas)):
        return None, (f"; {', '.join(str(Path(p).absolute()) for p in paths)} is not the model's training genome "
                      "(its SHA-256 differs from the one the model records)")
    return fasta_value(recorded), " (its SHA-256 checked)"


def baseline_training_bases(opts: EvaluateOptions, model_extra: dict, eval_cache, scored) -> tuple[list, str]:
    """Bases the Markov baseline is fitted on, and a sentence saying which; never the ``scored`` bases.

    1. ``baseline_fasta=PATH`` (or a list of paths) when given (all its contigs);
    2. else the model's own training genome (recorded in the exported model), when its files are here and
       their SHA-256 is the recorded one: model and Markov then learned from the same genome and both face the
       new one;
    3. else the evaluated genome outside the scored windows (the default 256 windows are a small part of it)."""
    from genossm.data.genome import fasta_paths
    from genossm.data.intervals import subtract_intervals
    from genossm.data.token_cache import fasta_value, open_tokens

    cap = opts.baselines.max_train_bases
    note = ""
    if opts.baseline_fasta:
        fasta_paths(opts.baseline_fasta)  # the error names a missing file
        path = fasta_value(opts.baseline_fasta)
    else:
        path, note = training_genome_here(model_extra)
    if path:
        paths = [path] if isinstance(path, str) else path
        cache = open_tokens(path, opts.cache_dir)
        how = ("given baseline_fasta" if opts.baseline_fasta else "the model's training genome") + \
            f" {' + '.join(paths)}{note}"
        ivs = [(n, 0, cache.lengths[n]) for n in cache.contig_names]
        # never fit the baseline on bases the model did not train on, nor on the bases being scored
        held = []
        if _file_names(paths) == _file_names(model_extra.get("fasta") or []):  # the model's training genome
            held += [(c, int(s), int(e)) for c, s, e in model_extra.get("held_out") or [] if c in cache.lengths]
        if _same_files(paths, eval_cache.paths):
            held += list(scored)
        if held:
            ivs = subtract_intervals(ivs, held)
            how += " outside the model's held-out span and the scored windows"
        if not ivs:
            raise GenossmError(f"baseline_fasta={opts.baseline_fasta}: no bases left to fit the Markov baseline on "
                               "(every base is scored or held out); give another baseline_fasta= or fewer "
                               "max_windows=" if opts.baseline_fasta else
                               "the model's training genome has no bases outside its held-out span and the scored "
                               "windows; set baseline_fasta=PATH")
    else:
        everything = [(n, 0, l) for n, l in eval_cache.all_lengths.items()]
        ivs = subtract_intervals(everything, scored)
        if not ivs:
            raise GenossmError(
                f"no bases to fit the Markov baseline on: every base of {eval_cache.fasta} is scored{note}; set "
                "baseline_fasta=PATH, fewer max_windows= (or baselines.enabled=false)")
        cache = open_tokens(eval_cache.paths, opts.cache_dir, contigs=sorted({c for c, _, _ in ivs}))
        how = f"the rest of {eval_cache.fasta} (the bases outside the scored windows){note}"
    seqs, total = [], 0
    for contig, start, end in ivs:
        if cap is not None and total >= cap:
            break
        if cap is not None:
            end = min(end, start + cap - total)
        seqs.append(cache.tokens(contig, start, end)[0])
        total += end - start
    if not any(len(s) for s in seqs):
        raise GenossmError(f"no bases to fit the Markov baseline on ({how}); set baseline_fasta=PATH "
                           "(or baselines.enabled=false)")
    return seqs, how


def scored_intervals(windows: TiledWindows) -> list[tuple[str, int, int]]:
    """The genome intervals the evaluation's windows cover."""
    out = []
    for k, start in windows.tiles:
        contig, _, end = windows.intervals[int(k)]
        out.append((contig, int(start), min(int(start) + windows.window_len, int(end))))
    return out


def _file_names(paths) -> list[str]:
    """The file names of a FASTA value (a bundled model records only the names of its training genome)."""
    return sorted(Path(p).name for p in ([paths] if isinstance(paths, str) else paths))


def _same_files(a, b) -> bool:
    return sorted(str(Path(p).resolve()) for p in a) == sorted(str(Path(p).resolve()) for p in b)


def evaluate(cfg: DictConfig) -> dict:
    """Bits per base and accuracy of ``pretrained`` on ``fasta`` (one FASTA or a list; contigs / BED regions),
    beside the baselines."""
    opts = EvaluateOptions.from_config(cfg)
    if not opts.pretrained:
        raise GenossmError("pretrained=PATH is required: an exported model folder or a .ckpt")
    if not opts.fasta:
        raise GenossmError("fasta=PATH is required: the genome to evaluate on (or fasta=[PATH,PATH,...])")
    if opts.output is None:
        raise GenossmError("output= is not set: give a folder for the results")
    log.info("%s", opts.describe())
    from torch.utils.data import DataLoader

    from genossm.data.datamodule import EvaluationPasses
    from genossm.data.genome import fasta_paths
    from genossm.data.intervals import read_bed
    from genossm.data.token_cache import fasta_value, open_tokens
    from genossm.data.windows import TiledWindows
    from genossm.models import from_pretrained, load_extra, model_path
    from genossm.models.hub import default_window_len
    from genossm.tasks.baselines import baseline_report
    from genossm.tasks.outputs import evaluation_rows, print_evaluation, write_evaluation_table
    from genossm.tasks.pretrain import MaskedLM
    from genossm.tasks.trainer import build_trainer, prepare_run

    model_path(opts.pretrained)  # the error names a missing model
    fasta_paths(opts.fasta)  # each file exists (the error names the missing one)
    fasta = fasta_value(opts.fasta)
    out = Path(str(opts.output)).absolute()
    check_writable(out / "evaluation.json", f"output={opts.output}")  # before the work, not after it
    prepare_run(cfg)
    devices = trainer_device(cfg)  # a device this machine lacks: before any work

    # instantiate: the model, the windows, the task, the trainer
    model = from_pretrained(opts.pretrained)
    extra = load_extra(opts.pretrained)
    window_len = int(opts.window_len) if opts.window_len else default_window_len(extra, fallback=EVAL_WINDOW)
    contigs = opts.contigs
    cache = open_tokens(fasta, opts.cache_dir, contigs=contigs)
    ivs = read_bed(opts.regions, cache) if opts.regions else [(n, 0, cache.lengths[n]) for n in cache.contig_names]
    windows = TiledWindows(cache, ivs, window_len, int(opts.batch_size), seed=int(opts.seed),
                           max_n_fraction=float(opts.max_n_fraction), rank=0, world_size=1,
                           max_windows=opts.max_windows)
    if len(windows.tiles) == 0:
        raise GenossmError(f"{cache.fasta}: no window to evaluate (all regions too short or mostly N)")
    if opts.baselines.enabled:  # before the scoring: a baseline that cannot be fitted stops the run now
        train_seqs, how = baseline_training_bases(opts, extra, cache, scored_intervals(windows))
    task = MaskedLM(model_config=model.config.to_dict(), mask_prob=float(opts.mask_prob), seed=int(opts.seed),
                    model=model)
    trainer = build_trainer(cfg, default_root_dir=None, enable_progress_bar=False, enable_checkpointing=False,
                            enable_model_summary=False, **devices)

    # run: the test loop over every pass of the windows
    trainer.test(task, dataloaders=DataLoader(EvaluationPasses(windows, opts.passes), batch_size=None), verbose=False)
    values = {k.split("/", 1)[1]: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
    values = {k: values[k] for k in ("loss", "nll", "bpb", "bpb_se", "ppl", "acc", "n_bases", "n_windows") if k in values}
    if not all(math.isfinite(values.get(k, 0.0)) for k in ("loss", "nll", "bpb")):
        raise GenossmError(f"pretrained={opts.pretrained}: the model's predictions are not finite numbers (bits per "
                           f"base {values.get('bpb')}): its weights or outputs hold NaN or infinite values; nothing "
                           "was written")
    seqs = windows.bases()
    result = {"pretrained": str(opts.pretrained), "fasta": fasta, "regions": opts.regions,
              "contigs": contigs, "window_len": window_len, "n_windows": int(len(windows.tiles)),
              "bases_in_windows": int(sum(len(s) for s in seqs)), "model": values, "baselines": None}
    if opts.baselines.enabled:
        base = baseline_report(train_seqs, seqs, max_order=int(opts.baselines.max_order),
                               pseudocount=float(opts.baselines.pseudocount))
        base["fitted_on"] = how
        result["baselines"] = base

    # write
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out)
    with atomic_write(out / "evaluation.json", "w") as handle:
        json.dump(result, handle, indent=2)
    rows = evaluation_rows(result)
    write_evaluation_table(rows, out / "evaluation.tsv")
    print_evaluation(result, rows, cfg, cache.fasta, out)
    return result


def trainer_device(cfg: DictConfig) -> dict:
    """The Trainer's accelerator and devices: ``device=cpu|cuda|cuda:N`` when given (short for
    ``trainer.accelerator``/``trainer.devices``), else the trainer group's, where ``auto`` is a CUDA GPU when one is
    visible and the CPU otherwise."""
    if cfg.get("device") not in (None, ""):
        return device_arguments(cfg.device)
    if str((cfg.get("trainer") or {}).get("accelerator") or "auto") == "auto":
        return device_arguments("auto")
    return {}


def device_arguments(device: str) -> dict:
    """``device=auto|cpu|cuda|cuda:N`` as Trainer arguments (auto: a GPU when one is visible)."""
    import torch

    device = str(device)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return {"accelerator": "cpu", "devices": 1}
    kind, _, index = device.partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        raise GenossmError(f"device={device}: expected auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise GenossmError(f"device={device}: no CUDA GPU is visible to this process; use device=cpu (or auto)")
    if index and int(index) >= torch.cuda.device_count():
        raise GenossmError(f"device={device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    index = index or None
    return {"accelerator": "gpu", "devices": [int(index)] if index is not None else 1}


# the run of a composed config (genossm.compose), for the command and for Python
run = evaluate


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="evaluate")
def main(cfg: DictConfig):
    return user_errors(run)(cfg)


if __name__ == "__main__":
    main()
