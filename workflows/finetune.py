"""genossm finetune: fine-tune, train a head, or linear-probe a pretrained model on labelled regions.

compose (Hydra) -> instantiate the regions (labels, splits, tokens), the backbone, the k-mer baseline and
linear probe, the region task and the Trainer -> fit (early stopping on val/loss), predict -> write into the
run folder (``output=PATH`` or the Hydra run folder): ``model/`` (the trained region model, for ``genossm
score-regions``), ``probe/`` (the linear probe in the same format), ``predictions.tsv`` (one row per region,
input order), ``metrics.json`` (per method and split), ``roc.png``/``pr.png``, ``config.yaml``.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from omegaconf import DictConfig

from genossm.config import given_keys, renamed_keys, save_config
from genossm.errors import GenossmError
from genossm.options import KmerOptions, Options, RunOptions, group, size
from genossm.paths import conf_dir
from genossm.workflows import user_errors

if TYPE_CHECKING:
    import torch.nn as nn

# torch, Lightning and the data modules are imported inside the functions that use them: the run says what it
# does (its first log line) before it loads them

log = logging.getLogger("genossm.finetune")


@dataclasses.dataclass
class SplitOptions(Options):
    """How the regions are split into train, val and test (``split:``)."""

    by: str = "auto"
    """``auto`` (the file's split column, else random), ``column``, ``contig`` or ``random``."""
    fractions: list[float] = dataclasses.field(default_factory=lambda: [0.8, 0.1, 0.1])
    """Train, val and test fractions of a contig or random split."""
    val_contigs: list[str] | None = None
    """Contigs held out for validation (``by=contig``)."""
    test_contigs: list[str] | None = None
    """Contigs held out for testing (``by=contig``)."""


@dataclasses.dataclass
class TrainOptions(Options):
    """The training of the head and backbone (``train:``)."""

    batch_size: int = size(32)
    """Regions per batch."""
    lr: float = 1.0e-3
    """The head's learning rate."""
    backbone_lr: float = 1.0e-4
    """The backbone's learning rate (``method=finetune``)."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    dropout: float = 0.1
    """Dropout before the head."""
    patience: int = size(3, minimum=0)
    """Validations without a lower val/loss before early stopping."""
    class_weights: bool = True
    """Inverse-frequency class weights from the train split."""


@dataclasses.dataclass
class FinetuneOptions(RunOptions):
    """The options of ``genossm finetune`` (``conf/finetune.yaml``), checked when made."""

    fasta: str | None = None
    """The genome the regions' coordinates refer to (unused for a FASTA of sequences)."""
    pretrained: str | None = None
    """The backbone: an exported folder, a ``.ckpt``, ``bundled:NAME`` or ``hf:ORG/NAME``; null: a random
    initialisation of ``model`` (a baseline)."""
    regions: str | None = None
    """A labelled BED/TSV of regions, or a FASTA of labelled sequences."""
    output: str | None = None
    """The run folder; null: ``outputs/finetune/<date_time>``."""
    label_type: str = "auto"
    """``auto``, ``binary``, ``multiclass`` or ``regression``."""
    label_column: str = "label"
    """The column holding the label (a headerless BED: its 4th column)."""
    region_len: int | str | None = size("auto", null=True, auto=True)
    """Every region centred and cropped/padded to this length; ``auto``: the longest region rounded up."""
    pooling: str = "mean"
    """``mean`` or ``center``: how per-base features become one embedding."""
    method: str = "finetune"
    """``finetune`` (all weights), ``head`` (frozen backbone) or ``probe`` (a linear model on frozen
    embeddings)."""
    probe: bool = True
    """Also fit the linear probe beside a finetune or head run."""
    split: SplitOptions = group(SplitOptions)
    """The train/val/test split."""
    train: TrainOptions = group(TrainOptions)
    """The training of the head (and backbone)."""
    kmer: KmerOptions = group(KmerOptions)
    """The k-mer baseline."""
    model: dict | None = None
    """The model config of a random initialisation (used only without ``pretrained``)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.method not in ("finetune", "head", "probe"):
            raise GenossmError(f"method must be finetune, head or probe, got {self.method!r}")

    def describe(self) -> str:
        """One line saying what the run trains (the run's first log line)."""
        backbone = f"the model {self.pretrained}" if self.pretrained else "a randomly initialised model"
        return f"finetune ({self.method}): {backbone} on the labels ({self.label_column}) of {self.regions}"


def backbone_source(pretrained) -> str | None:
    """Where the backbone came from, as a user would name it again: the imported checkpoint's ``hf:`` name and
    commit (or its folder), ``bundled:NAME``, or the model folder / checkpoint path; None for a random one."""
    from genossm.models import load_extra
    from genossm.models.hub import BUNDLED

    if not pretrained:
        return None
    text = str(pretrained)
    source = load_extra(pretrained).get("source")
    if source:
        return str(source)
    return text if text.startswith(BUNDLED) else str(Path(text).resolve())


def load_backbone(pretrained, model_config=None) -> tuple[nn.Module, bool]:
    """(backbone, pretrained?) from a saved model, or a random initialisation of ``model_config``."""
    from genossm.models import BiMambaConfig, BiMambaLM, from_pretrained, model_path

    if pretrained:
        model_path(pretrained)  # the error names a missing model
        return from_pretrained(pretrained), True
    if model_config is None:
        raise GenossmError("no pretrained=PATH given and no model config to initialise one")
    return BiMambaLM(BiMambaConfig.from_dict(dict(model_config), source="model")), False


def training_window(opts: FinetuneOptions) -> int | None:
    """The cap on ``region_len=auto``: the window the pretrained model was trained on, when it records one."""
    from genossm.models import load_extra, model_path
    from genossm.models.hub import train_window_len

    if opts.region_len != "auto" or not opts.pretrained:
        return None
    model_path(opts.pretrained)  # the error names a missing model
    return train_window_len(load_extra(opts.pretrained))


# old spelling -> new, accepted for one release ("task" is pretraining's module; "mode" meant two things here)
RENAMED = {"task": "label_type", "mode": "method", "split.mode": "split.by"}


def finetune(cfg: DictConfig, out_dir) -> dict:
    """The ``genossm finetune`` run: every output (``config.yaml`` included) goes to ``out_dir``; returns the
    metrics dict. :func:`run` picks ``out_dir`` as the command does.

    ``cfg`` keys: fasta, pretrained, regions, seed, label_type, label_column, region_len, pooling, method,
    split.{by,fractions,val_contigs,test_contigs}, train.{...}, probe, kmer.{enabled,k,canonical},
    model (used only without ``pretrained``), trainer (Lightning Trainer arguments).
    """
    spelled = renamed_keys(cfg, RENAMED, given_keys())  # old spellings move to their new keys, once
    opts = FinetuneOptions.from_config(cfg, spelled=spelled)  # a bad value is named as the user wrote it
    log.info("%s", opts.describe())
    import numpy as np
    import torch
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger
    from torch.utils.data import DataLoader

    from genossm.data.intervals import assign_splits
    from genossm.data.regions import open_genome, read_regions, region_tokens
    from genossm.data.windows import RegionDataset
    from genossm.models import save_region_model
    from genossm.tasks.baselines import class_weights, fit_linear, kmer_baseline
    from genossm.tasks.metrics import decision_threshold, metrics_by_split, output_scores
    from genossm.tasks.outputs import format_metrics, input_columns, score_columns, write_json, write_table
    from genossm.tasks.plots import plot_curves
    from genossm.tasks.region_labels import check_split_classes, encode_labels
    from genossm.tasks.regions import RegionModel, embed_regions
    from genossm.tasks.trainer import build_trainer, prepare_run

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out_dir)
    method = opts.method
    prepare_run(cfg)

    if not opts.regions:
        raise GenossmError("regions=PATH (a labelled BED/TSV/FASTA) is required")
    regions = read_regions(opts.regions, label_column=opts.label_column, need_labels=True)
    genome = open_genome(opts.fasta, "finetune") if regions.has_coords else None
    labels = encode_labels(regions, opts.label_type)
    sp = opts.split
    splits = assign_splits(regions, sp.by, list(sp.fractions), opts.seed, sp.val_contigs, sp.test_contigs)
    for needed in ("train", "val"):
        if not (splits == needed).any():
            raise GenossmError(f"{regions.source}: the {needed} split is empty; change split.by or split.fractions")
    check_split_classes(regions, labels, splits)
    tokens, valid = region_tokens(regions, genome, opts.region_len, max_len=training_window(opts))
    region_len = int(tokens.shape[1])
    n_classes = len(labels.classes) if labels.classes else 1
    train_rows = np.flatnonzero(splits == "train")
    val_rows = np.flatnonzero(splits == "val")
    y = labels.y
    weights = class_weights(y[train_rows], labels.label_type, n_classes) if opts.train.class_weights else None
    log.info("%d regions (%s), %s; split %s", len(regions), labels.label_type, regions.source,
             {s: int((splits == s).sum()) for s in ("train", "val", "test")})

    backbone, was_pretrained = load_backbone(opts.pretrained, opts.model)
    if not was_pretrained:
        log.warning("no pretrained=PATH: the backbone is randomly initialised (a baseline, not a pretrained model)")
    meta = {"task": labels.label_type, "classes": labels.classes, "pooling": opts.pooling, "region_len": region_len,
            "label_column": opts.label_column, "source_regions": Path(regions.source).name,
            "backbone": backbone_source(opts.pretrained)}
    scores: dict[str, torch.Tensor] = {}

    def decision(method_scores: torch.Tensor) -> dict:
        """The binary decision threshold (chosen without the test split), saved with the model."""
        if labels.label_type != "binary":
            return {}
        threshold, source = decision_threshold(method_scores, y, splits)
        return {"threshold": threshold, "threshold_from": source}

    if opts.kmer.enabled:
        _, scores["kmer"] = kmer_baseline(tokens, valid, y, splits, labels.label_type, n_classes, opts.kmer.k,
                                          opts.kmer.canonical,
                                          balance=bool(opts.train.class_weights))
    if opts.probe or method == "probe":  # frozen pretrained embeddings, before any fine-tuning touches them
        emb = embed_regions(backbone, tokens, valid, opts.pooling, opts.train.batch_size)
        probe = fit_linear(emb[train_rows], y[train_rows], labels.label_type, n_classes, emb[val_rows], y[val_rows],
                           balance=bool(opts.train.class_weights))
        scores["probe"] = probe.predict(emb)
        save_region_model(out_dir / ("model" if method == "probe" else "probe"), backbone, probe.folded(),
                          dict(meta, mode="probe", l2=probe.l2, **decision(scores["probe"])))

    if method in ("finetune", "head"):
        t = opts.train
        module = RegionModel(backbone, labels.label_type, labels.n_outputs, method=method, pooling=opts.pooling,
                             lr=t.lr, backbone_lr=t.backbone_lr, weight_decay=t.weight_decay,
                             class_weights=None if weights is None else weights.tolist(), dropout=t.dropout)
        generator = torch.Generator().manual_seed(int(opts.seed))
        train_dl = DataLoader(RegionDataset(tokens, valid, y, train_rows), batch_size=t.batch_size, shuffle=True,
                              generator=generator)
        val_dl = DataLoader(RegionDataset(tokens, valid, y, val_rows), batch_size=t.batch_size)
        checkpoint = ModelCheckpoint(dirpath=out_dir / "checkpoints", filename="best", monitor="val/loss", mode="min",
                                     save_top_k=1, save_weights_only=True)
        callbacks = [checkpoint, EarlyStopping(monitor="val/loss", mode="min", patience=t.patience)]
        trainer = build_trainer(cfg, callbacks, [CSVLogger(str(out_dir), name="logs", version="")],
                                default_root_dir=str(out_dir))
        trainer.fit(module, train_dl, val_dl)
        if checkpoint.best_model_path and Path(checkpoint.best_model_path).is_file():
            state = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True)["state_dict"]
            module.load_state_dict(state)
            log.info("best epoch by val/loss: %s", checkpoint.best_model_path)
        module.cpu()
        scores[method] = output_scores(module.predict_logits(tokens, valid, t.batch_size), labels.label_type)
        save_region_model(out_dir / "model", module.backbone, module.head, dict(meta, mode=method, **decision(scores[method])))

    # predictions (input order), metrics, plots
    table = input_columns(regions)
    table["label"] = regions.table["label"].to_numpy()
    table["split"] = splits
    for name, s in scores.items():
        for col, values in score_columns(s, labels.label_type, labels.classes, f"_{name}").items():
            table[col] = values
    write_table(table, out_dir / "predictions.tsv")
    metrics = {
        "task": labels.label_type,
        "classes": labels.classes,
        "regions": str(regions.source),
        "pretrained": str(opts.pretrained) if opts.pretrained else None,
        "mode": method,
        "region_len": region_len,
        "split_sizes": {s: int((splits == s).sum()) for s in ("train", "val", "test")},
        "methods": {name: metrics_by_split(labels.label_type, s, y, splits, n_classes) for name, s in scores.items()},
    }
    write_json(metrics, out_dir / "metrics.json")
    eval_split = "test" if (splits == "test").any() else "val"
    rows = torch.from_numpy(splits == eval_split)
    plot_curves(labels.label_type, y[rows], {n: s[rows] for n, s in scores.items()}, out_dir,
                title=f"{Path(regions.source).name}: {eval_split} split",
                metrics={n: m.get(eval_split, {}) for n, m in metrics["methods"].items()})
    print(format_metrics(metrics, eval_split))
    print(f"outputs in {out_dir}")
    return metrics


def run_folder(cfg: DictConfig) -> Path:
    """The run folder: Hydra's run folder under the command (``output=`` or ``outputs/finetune/<date_time>``),
    the same from Python (``output=`` or ``outputs/finetune/<run_id>``)."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    from genossm.config import run_id

    return Path(str(cfg.output)) if cfg.get("output") else Path("outputs/finetune") / run_id()


def run(cfg: DictConfig) -> dict:
    """The ``genossm finetune`` run of a composed config (:func:`genossm.compose`), from the command or Python:
    the outputs and ``config.yaml`` go to :func:`run_folder`; returns the metrics dict."""
    return finetune(cfg, run_folder(cfg))


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="finetune")
@user_errors
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
