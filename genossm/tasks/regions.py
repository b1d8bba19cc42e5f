"""Region-level tasks on a pretrained backbone: fine-tuning, head-only training, linear probe; metrics and outputs.

* :class:`RegionModel` (a LightningModule): backbone + linear head on the pooled, reverse-complement
  invariant embedding. ``mode="finetune"`` trains everything, ``mode="head"`` freezes the backbone.
* The linear probe caches frozen embeddings (:func:`embed_regions`) and fits a logistic/ridge model
  (:func:`genossm.tasks.kmer_baseline.fit_linear`); it is folded into the same linear head format.
* :func:`compute_metrics` (torchmetrics), :func:`write_predictions`, :func:`plot_curves`.

A fine-tuned region model is a ``save_pretrained`` folder (``model.safetensors`` + ``config.json`` whose
``extra["region_head"]`` holds task, classes, pooling, region_len) plus ``head.safetensors`` (the linear
head: ``weight`` (n_outputs, H), ``bias`` (n_outputs,)). :func:`save_region_model` /
:func:`load_region_model` write and read it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from genossm.data.tokenizer import reverse_complement
from genossm.errors import GenossmError, atomic_path, atomic_write
from genossm.tasks.kmer_baseline import output_scores

HEAD_FILE = "head.safetensors"


# --------------------------------------------------------------------------------------------- features


def rc_invariant_embed(backbone: nn.Module, tokens: torch.Tensor, valid: torch.Tensor | None, pooling: str = "mean") -> torch.Tensor:
    """(B, L) -> (B, H) pooled embedding that is the same for a sequence and its reverse complement.

    An RC-equivariant backbone with mean pooling is invariant by construction; otherwise the embeddings
    of both strands are averaged.
    """
    emb = backbone.embed(tokens, pooling=pooling, valid=valid)
    if getattr(backbone.config, "rc_equivariant", False) and pooling == "mean":
        return emb
    rc_valid = None if valid is None else valid.flip(-1)
    return 0.5 * (emb + backbone.embed(reverse_complement(tokens), pooling=pooling, valid=rc_valid))


@torch.no_grad()
def embed_regions(backbone: nn.Module, tokens: torch.Tensor, valid: torch.Tensor, pooling: str = "mean", batch_size: int = 64) -> torch.Tensor:
    """RC-invariant embeddings (N, H) of every row, in order, with the backbone in eval mode."""
    was_training = backbone.training
    backbone.eval()
    device = next(backbone.parameters()).device
    out = []
    for i in range(0, len(tokens), batch_size):
        t = tokens[i : i + batch_size].to(device)
        v = valid[i : i + batch_size].to(device)
        out.append(rc_invariant_embed(backbone, t, v, pooling).float().cpu())
    backbone.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, 0)


def embedding_dim(backbone: nn.Module, pooling: str = "mean") -> int:
    if hasattr(backbone, "embed_dim"):
        return int(backbone.embed_dim)
    with torch.no_grad():
        was_training = backbone.training
        backbone.eval()
        device = next(backbone.parameters()).device
        dim = backbone.embed(torch.zeros(1, 8, dtype=torch.long, device=device), pooling=pooling).shape[-1]
        backbone.train(was_training)
    return int(dim)


# --------------------------------------------------------------------------------------------- lightning


class RegionDataset(Dataset):
    def __init__(self, tokens: torch.Tensor, valid: torch.Tensor, y: torch.Tensor, rows: np.ndarray | None = None):
        rows = np.arange(len(tokens)) if rows is None else np.asarray(rows)
        self.tokens, self.valid, self.y, self.rows = tokens[rows], valid[rows], y[rows], torch.from_numpy(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):
        return {"tokens": self.tokens[i], "valid": self.valid[i], "y": self.y[i], "row": self.rows[i]}


class RegionModel(L.LightningModule):
    """Backbone + linear head on the pooled RC-invariant embedding; binary, multi-class or regression."""

    def __init__(
        self,
        backbone: nn.Module,
        task: str,
        n_outputs: int,
        mode: str = "finetune",
        pooling: str = "mean",
        lr: float = 1e-3,
        backbone_lr: float | None = None,
        weight_decay: float = 0.01,
        class_weights: list[float] | None = None,
        dropout: float = 0.0,
    ):
        super().__init__()
        if mode not in ("finetune", "head"):
            raise GenossmError(f"RegionModel mode must be finetune or head (the probe is fitted separately), got {mode!r}")
        self.save_hyperparameters(ignore=["backbone"])
        self.backbone = backbone
        self.head = nn.Linear(embedding_dim(backbone, pooling), n_outputs)
        self.dropout = nn.Dropout(dropout)
        self.task, self.mode, self.pooling = task, mode, pooling
        self.register_buffer("class_weights", None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32))
        if mode == "head":
            self.backbone.requires_grad_(False)
        self.backbone.train(mode == "finetune")  # Lightning keeps the modes it finds at fit start
        self._val_outputs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def train(self, mode: bool = True):
        super().train(mode)
        if self.mode == "head":
            self.backbone.eval()  # frozen: no dropout, no running statistics
        return self

    def forward(self, tokens: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        if self.mode == "head":
            with torch.no_grad():
                emb = rc_invariant_embed(self.backbone, tokens, valid, self.pooling)
        else:
            emb = rc_invariant_embed(self.backbone, tokens, valid, self.pooling)
        return self.head(self.dropout(emb.float()))

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        w = self.class_weights
        if self.task == "binary":
            pos_weight = None if w is None else w[1] / w[0]
            return F.binary_cross_entropy_with_logits(logits[:, 0], y.float(), pos_weight=pos_weight)
        if self.task == "multiclass":
            return F.cross_entropy(logits, y.long(), weight=w)
        return F.mse_loss(logits[:, 0], y.float())

    def training_step(self, batch, batch_idx):
        loss = self.loss(self(batch["tokens"], batch["valid"]), batch["y"])
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["y"]))
        return loss

    def validation_step(self, batch, batch_idx):
        logits = self(batch["tokens"], batch["valid"])
        self._val_outputs.append((logits.detach().float().cpu(), batch["y"].detach().cpu()))

    def on_validation_epoch_end(self):
        if not self._val_outputs:
            return
        logits = torch.cat([o[0] for o in self._val_outputs])
        y = torch.cat([o[1] for o in self._val_outputs])
        self._val_outputs.clear()
        # unweighted loss on val: the early-stopping signal
        w, self.class_weights = self.class_weights, None
        self.log("val/loss", self.loss(logits, y), prog_bar=True)
        self.class_weights = w
        metrics = compute_metrics(self.task, output_scores(logits, self.task), y, logits.shape[-1])
        for key in ("auroc", "auprc", "pearson"):
            if metrics.get(key) is not None:
                self.log(f"val/{key}", float(metrics[key]))

    def configure_optimizers(self):
        head_params = list(self.head.parameters())
        groups = [{"params": head_params, "lr": self.hparams.lr}]
        if self.mode == "finetune":
            groups.append({"params": list(self.backbone.parameters()), "lr": self.hparams.backbone_lr or self.hparams.lr})
        return torch.optim.AdamW(groups, weight_decay=self.hparams.weight_decay)

    @torch.no_grad()
    def predict_logits(self, tokens: torch.Tensor, valid: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        emb = embed_regions(self.backbone, tokens, valid, self.pooling, batch_size)
        return self.head(emb.to(self.head.weight.device)).float().cpu()


# --------------------------------------------------------------------------------------------- saving


def save_region_model(folder, backbone: nn.Module, head: nn.Linear, meta: dict) -> Path:
    """Write a region model: ``save_pretrained`` backbone folder + ``head.safetensors``."""
    from safetensors.torch import save_file

    from genossm.models import save_pretrained

    folder = Path(folder)
    meta = dict(meta, in_features=head.in_features, n_outputs=head.out_features)
    save_pretrained(backbone, folder, extra={"region_head": meta})
    with atomic_path(folder / HEAD_FILE, ".safetensors") as tmp:
        save_file({"weight": head.weight.detach().cpu().contiguous(), "bias": head.bias.detach().cpu().contiguous()}, str(tmp))
    return folder


def load_region_model(path, map_location="cpu") -> tuple[nn.Module, nn.Linear, dict]:
    """(backbone, head, meta) of a folder written by :func:`save_region_model` (``genossm finetune``)."""
    from safetensors.torch import load_file

    from genossm.models import from_pretrained, load_extra

    folder = Path(path)
    head_file = folder / HEAD_FILE
    if not head_file.is_file():
        raise GenossmError(
            f"{folder} is not a fine-tuned region model (no {HEAD_FILE}); give the model/ folder written by genossm finetune"
        )
    meta = load_extra(folder).get("region_head")
    if not meta:
        raise GenossmError(f"{folder}/config.json has no region_head entry; it was not written by genossm finetune")
    backbone = from_pretrained(folder, map_location=map_location)
    state = load_file(str(head_file))
    head = nn.Linear(state["weight"].shape[1], state["weight"].shape[0])
    head.load_state_dict(state)
    return backbone, head, meta


# --------------------------------------------------------------------------------------------- metrics


def compute_metrics(task: str, scores: torch.Tensor, y: torch.Tensor, n_classes: int = 2) -> dict:
    """Metrics of ``scores`` (P(class 1), class probabilities, or values) against ``y``.

    Binary/multi-class: AUROC, AUPRC (average precision), MCC, accuracy (argmax / 0.5 threshold);
    regression: Pearson, Spearman, MSE. A metric that is undefined on this set (one class only) is None.
    """
    import torchmetrics.functional as M

    scores = scores.detach().float().cpu()
    y = y.detach().cpu()
    out: dict = {"n": int(len(y))}
    if len(y) == 0:
        return out
    if task == "binary":
        yi = y.long()
        out["n_positive"] = int(yi.sum())
        both = 0 < out["n_positive"] < len(y)
        out["auroc"] = float(M.auroc(scores, yi, task="binary")) if both else None
        out["auprc"] = float(M.average_precision(scores, yi, task="binary")) if both else None
        out["mcc"] = float(M.matthews_corrcoef(scores, yi, task="binary"))
        out["accuracy"] = float(M.accuracy(scores, yi, task="binary"))
    elif task == "multiclass":
        yi = y.long()
        present = len(torch.unique(yi)) == n_classes
        kw = dict(task="multiclass", num_classes=n_classes)
        out["auroc"] = float(M.auroc(scores, yi, average="macro", **kw)) if present else None
        out["auprc"] = float(M.average_precision(scores, yi, average="macro", **kw)) if present else None
        out["mcc"] = float(M.matthews_corrcoef(scores, yi, **kw))
        out["accuracy"] = float(M.accuracy(scores, yi, average="micro", **kw))
    else:
        yf = y.float()
        constant = len(y) < 2 or float(yf.std()) == 0 or float(scores.std()) == 0
        out["pearson"] = None if constant else float(M.pearson_corrcoef(scores, yf))
        out["spearman"] = None if constant else float(M.spearman_corrcoef(scores, yf))
        out["mse"] = float(M.mean_squared_error(scores, yf))
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in out.items()}


def metrics_by_split(task: str, scores: torch.Tensor, y: torch.Tensor, splits, n_classes: int = 2) -> dict:
    splits = np.asarray(splits)
    return {
        split: compute_metrics(task, scores[torch.from_numpy(splits == split)], y[torch.from_numpy(splits == split)], n_classes)
        for split in ("train", "val", "test")
        if (splits == split).any()
    }


def score_columns(scores: torch.Tensor, task: str, classes: list[str] | None, suffix: str = "") -> dict:
    """Columns for a predictions table: ``score`` (binary), ``prob_<class>`` + ``pred`` (multi-class), ``pred``."""
    s = scores.detach().cpu().numpy()
    if task == "binary":
        return {f"score{suffix}": s}
    if task == "multiclass":
        cols = {f"prob_{c}{suffix}": s[:, k] for k, c in enumerate(classes)}
        cols[f"pred{suffix}"] = np.asarray(classes, dtype=object)[s.argmax(1)]
        return cols
    return {f"pred{suffix}": s}


def write_table(df: pd.DataFrame, path) -> Path:
    """Write ``df`` atomically as TSV (``.tsv``, ``.txt``, ``.tsv.gz``), parquet or CSV by suffix."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith(".parquet"):
        with atomic_path(path, ".parquet") as tmp:
            df.to_parquet(tmp, index=False)
    elif name.endswith((".csv", ".csv.gz")):
        with atomic_path(path, ".csv.gz" if name.endswith(".gz") else ".csv") as tmp:
            df.to_csv(tmp, index=False)
    else:
        with atomic_path(path, ".tsv.gz" if name.endswith(".gz") else ".tsv") as tmp:
            df.to_csv(tmp, sep="\t", index=False)
    return path


def write_json(obj, path) -> Path:
    with atomic_write(path, "w") as fh:
        json.dump(obj, fh, indent=2)
        fh.write("\n")
    return Path(path)


def plot_curves(task: str, y: torch.Tensor, scores: dict[str, torch.Tensor], folder, title: str = "") -> list[Path]:
    """ROC and PR curves (classification) or predicted-vs-true scatter (regression), one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torchmetrics.functional as M

    folder = Path(folder)
    written = []
    if task == "regression":
        fig, ax = plt.subplots(figsize=(5, 5))
        for name, s in scores.items():
            ax.scatter(y.numpy(), s.numpy(), s=6, alpha=0.6, label=name)
        ax.set(xlabel="true", ylabel="predicted", title=title)
        ax.legend()
        with atomic_path(folder / "scatter.png", ".png") as tmp:
            fig.savefig(tmp, dpi=120, bbox_inches="tight")
        plt.close(fig)
        return [folder / "scatter.png"]
    yi = y.long()
    if len(torch.unique(yi)) < 2:
        return []
    for kind in ("roc", "pr"):
        fig, ax = plt.subplots(figsize=(5, 5))
        for name, s in scores.items():
            if task == "multiclass":  # micro-average: every (region, class) pair as one binary decision
                s_flat = s.reshape(-1)
                y_flat = F.one_hot(yi, s.shape[1]).reshape(-1)
            else:
                s_flat, y_flat = s, yi
            if kind == "roc":
                fpr, tpr, _ = M.roc(s_flat, y_flat, task="binary")
                auc = float(M.auroc(s_flat, y_flat, task="binary"))
                ax.plot(fpr.numpy(), tpr.numpy(), label=f"{name} (AUROC {auc:.3f})")
            else:
                precision, recall, _ = M.precision_recall_curve(s_flat, y_flat, task="binary")
                ap = float(M.average_precision(s_flat, y_flat, task="binary"))
                ax.plot(recall.numpy(), precision.numpy(), label=f"{name} (AUPRC {ap:.3f})")
        if kind == "roc":
            ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
            ax.set(xlabel="false positive rate", ylabel="true positive rate")
        else:
            ax.axhline(float(F.one_hot(yi).float().mean() if task == "multiclass" else yi.float().mean()), color="grey", lw=0.8, ls="--")
            ax.set(xlabel="recall", ylabel="precision")
        ax.set_title(title)
        ax.legend(loc="lower right" if kind == "roc" else "upper right", fontsize=8)
        path = folder / f"{kind}.png"
        with atomic_path(path, ".png") as tmp:
            fig.savefig(tmp, dpi=120, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
    return written


# --------------------------------------------------------------------------------------------- runs


def load_backbone(pretrained, model_config=None) -> tuple[nn.Module, bool]:
    """(backbone, pretrained?) from a saved model, or a random initialisation of ``model_config``."""
    from genossm.models import BiMambaConfig, BiMambaLM, from_pretrained

    if pretrained:
        if not Path(pretrained).exists():
            raise GenossmError(f"pretrained model {pretrained} not found")
        return from_pretrained(pretrained), True
    if model_config is None:
        raise GenossmError("no pretrained=PATH given and no model config to initialise one")
    return BiMambaLM(BiMambaConfig(**dict(model_config))), False


def input_columns(regions) -> pd.DataFrame:
    """The identifying columns of every region (name, chrom, start, end, strand), in input order."""
    t = regions.table
    cols = ["name", "chrom", "start", "end", "strand"] if regions.has_coords else ["name"]
    return t[cols].reset_index(drop=True).copy()


def run_finetune(cfg, out_dir) -> dict:
    """The ``genossm finetune`` run: every output goes to ``out_dir``; returns the metrics dict.

    ``cfg`` keys: fasta, pretrained, regions, seed, task, label_column, region_len, pooling, mode,
    split.{mode,fractions,val_contigs,test_contigs}, train.{...}, probe, kmer.{enabled,k,canonical},
    model (used only without ``pretrained``), trainer (Lightning Trainer arguments).
    """
    import logging

    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger
    from genossm.config import build_trainer, prepare_run
    from genossm.data.regions import (assign_splits, check_split_classes, encode_labels, open_genome, read_regions,
                                      region_tokens)
    from genossm.tasks.kmer_baseline import class_weights, fit_linear, kmer_baseline

    log = logging.getLogger("genossm.finetune")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    mode = cfg.mode
    if mode not in ("finetune", "head", "probe"):
        raise GenossmError(f"mode must be finetune, head or probe, got {mode!r}")
    prepare_run(cfg)

    if not cfg.regions:
        raise GenossmError("regions=PATH (a labelled BED/TSV/FASTA) is required")
    regions = read_regions(cfg.regions, label_column=cfg.label_column, need_labels=True)
    genome = open_genome(cfg.fasta) if regions.has_coords else None
    labels = encode_labels(regions, cfg.task)
    sp = cfg.split
    splits = assign_splits(regions, sp.mode, list(sp.fractions), cfg.seed, sp.val_contigs, sp.test_contigs)
    for needed in ("train", "val"):
        if not (splits == needed).any():
            raise GenossmError(f"{regions.source}: the {needed} split is empty; change split.mode or split.fractions")
    check_split_classes(regions, labels, splits)
    tokens, valid = region_tokens(regions, genome, cfg.region_len)
    region_len = int(tokens.shape[1])
    n_classes = len(labels.classes) if labels.classes else 1
    train_rows = np.flatnonzero(splits == "train")
    val_rows = np.flatnonzero(splits == "val")
    y = labels.y
    weights = class_weights(y[train_rows], labels.task, n_classes) if cfg.train.class_weights else None
    log.info("%d regions (%s), %s; split %s", len(regions), labels.task, regions.source,
             {s: int((splits == s).sum()) for s in ("train", "val", "test")})

    backbone, was_pretrained = load_backbone(cfg.pretrained, cfg.get("model"))
    if not was_pretrained:
        log.warning("no pretrained=PATH: the backbone is randomly initialised (a baseline, not a pretrained model)")
    meta = {"task": labels.task, "classes": labels.classes, "pooling": cfg.pooling, "region_len": region_len,
            "label_column": cfg.label_column, "source_regions": Path(regions.source).name}
    scores: dict[str, torch.Tensor] = {}

    if cfg.kmer.enabled:
        _, scores["kmer"] = kmer_baseline(tokens, valid, y, splits, labels.task, n_classes, cfg.kmer.k, cfg.kmer.canonical,
                                          balance=bool(cfg.train.class_weights))
    if cfg.probe or mode == "probe":  # frozen pretrained embeddings, before any fine-tuning touches them
        emb = embed_regions(backbone, tokens, valid, cfg.pooling, cfg.train.batch_size)
        probe = fit_linear(emb[train_rows], y[train_rows], labels.task, n_classes, emb[val_rows], y[val_rows],
                           balance=bool(cfg.train.class_weights))
        scores["probe"] = probe.predict(emb)
        save_region_model(out_dir / ("model" if mode == "probe" else "probe"), backbone, probe.folded(),
                          dict(meta, mode="probe", l2=probe.l2))

    if mode in ("finetune", "head"):
        t = cfg.train
        module = RegionModel(backbone, labels.task, labels.n_outputs, mode=mode, pooling=cfg.pooling, lr=t.lr,
                             backbone_lr=t.backbone_lr, weight_decay=t.weight_decay,
                             class_weights=None if weights is None else weights.tolist(), dropout=t.dropout)
        generator = torch.Generator().manual_seed(int(cfg.seed))
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
        scores[mode] = output_scores(module.predict_logits(tokens, valid, t.batch_size), labels.task)
        save_region_model(out_dir / "model", module.backbone, module.head, dict(meta, mode=mode))

    # predictions (input order), metrics, plots
    table = input_columns(regions)
    table["label"] = regions.table["label"].to_numpy()
    table["split"] = splits
    for name, s in scores.items():
        for col, values in score_columns(s, labels.task, labels.classes, f"_{name}").items():
            table[col] = values
    write_table(table, out_dir / "predictions.tsv")
    metrics = {
        "task": labels.task,
        "classes": labels.classes,
        "regions": str(regions.source),
        "pretrained": str(cfg.pretrained) if cfg.pretrained else None,
        "mode": mode,
        "region_len": region_len,
        "split_sizes": {s: int((splits == s).sum()) for s in ("train", "val", "test")},
        "methods": {name: metrics_by_split(labels.task, s, y, splits, n_classes) for name, s in scores.items()},
    }
    write_json(metrics, out_dir / "metrics.json")
    eval_split = "test" if (splits == "test").any() else "val"
    rows = torch.from_numpy(splits == eval_split)
    plot_curves(labels.task, y[rows], {n: s[rows] for n, s in scores.items()}, out_dir,
                title=f"{Path(regions.source).name}: {eval_split} split")
    print(format_metrics(metrics, eval_split))
    print(f"outputs in {out_dir}")
    return metrics


def format_metrics(metrics: dict, split: str = "test") -> str:
    """A small text table: one row per method, the metrics of one split."""
    rows = []
    keys = ("auroc", "auprc", "mcc", "accuracy") if metrics["task"] != "regression" else ("pearson", "spearman", "mse")
    rows.append(f"{'method':<10}" + "".join(f"{k:>10}" for k in keys) + f"   ({split} split)")
    for name, by_split in metrics["methods"].items():
        m = by_split.get(split, {})
        rows.append(f"{name:<10}" + "".join(f"{m[k]:>10.3f}" if m.get(k) is not None else f"{'-':>10}" for k in keys))
    return "\n".join(rows)


@torch.no_grad()
def embed_variable(backbone: nn.Module, seqs: list[np.ndarray], pooling: str = "mean", batch_size: int = 64,
                   region_len: int | None = None) -> torch.Tensor:
    """RC-invariant embeddings (N, H) in input order.

    With ``region_len`` every sequence is centred/padded to it; without, sequences are batched only with
    others of the same length, so no padding ever enters the bidirectional scan.
    """
    from genossm.data.regions import center_fit

    if region_len:
        fitted = [center_fit(s, int(region_len)) for s in seqs]
        tokens = torch.from_numpy(np.stack([f[0] for f in fitted]).astype(np.int64))
        valid = torch.from_numpy(np.stack([f[1] for f in fitted]))
        return embed_regions(backbone, tokens, valid, pooling, batch_size)
    out = torch.zeros(len(seqs), embedding_dim(backbone, pooling))
    by_length: dict[int, list[int]] = {}
    for i, s in enumerate(seqs):
        by_length.setdefault(len(s), []).append(i)
    for length, rows in by_length.items():
        tokens = torch.from_numpy(np.stack([seqs[i] for i in rows]).astype(np.int64))
        out[rows] = embed_regions(backbone, tokens, torch.ones_like(tokens, dtype=torch.bool), pooling, batch_size)
    return out


def score_regions(pretrained, regions_path, output, fasta=None, batch_size: int = 64) -> pd.DataFrame:
    """Scores of every region (input order) from a fine-tuned region model; written atomically to ``output``."""
    from genossm.data.regions import open_genome, read_regions, region_tokens

    if not output:
        raise GenossmError("output=PATH is required (.tsv, .tsv.gz, .csv or .parquet)")
    backbone, head, meta = load_region_model(pretrained)
    regions = read_regions(regions_path, label_column=None)
    genome = open_genome(fasta) if regions.has_coords else None
    tokens, valid = region_tokens(regions, genome, meta["region_len"])
    with torch.no_grad():
        logits = head(embed_regions(backbone, tokens, valid, meta["pooling"], batch_size))
    table = input_columns(regions)
    for col, values in score_columns(output_scores(logits, meta["task"]), meta["task"], meta.get("classes")).items():
        table[col] = values
    write_table(table, output)
    print(f"scored {len(table)} regions -> {output}")
    return table


def embed_file(pretrained, regions_path, output, fasta=None, pooling: str = "mean", region_len=None,
               batch_size: int = 64) -> np.ndarray:
    """RC-invariant embeddings of every region / FASTA record, input order, to ``.npy`` or ``.parquet``."""
    from genossm.data.regions import open_genome, read_regions, region_sequences
    from genossm.models import from_pretrained

    if not output:
        raise GenossmError("output=PATH is required (.npy or .parquet)")
    suffix = Path(str(output)).suffix.lower()
    if suffix not in (".npy", ".parquet"):
        raise GenossmError(f"output {output}: the suffix must be .npy or .parquet")
    if not Path(str(pretrained)).exists():
        raise GenossmError(f"pretrained model {pretrained} not found")
    backbone = from_pretrained(pretrained)
    regions = read_regions(regions_path, label_column=None)
    genome = open_genome(fasta) if regions.has_coords else None
    emb = embed_variable(backbone, region_sequences(regions, genome), pooling, batch_size, region_len).numpy()
    emb = emb.astype(np.float32)
    if suffix == ".npy":
        with atomic_write(output, "wb") as fh:
            np.save(fh, emb)
    else:
        table = input_columns(regions)
        table = pd.concat([table, pd.DataFrame(emb, columns=[f"emb_{i}" for i in range(emb.shape[1])])], axis=1)
        write_table(table, output)
    print(f"embedded {len(emb)} regions ({emb.shape[1]} dims) -> {output}")
    return emb
