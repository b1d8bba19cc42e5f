"""What the tasks measure: bits per base of the masked LM, the region metrics, the region losses.

* :class:`BitsPerBase` (a torchmetrics ``Metric``, DDP-synced): per-base negative log-likelihood, weighted
  loss and arg-max accuracy over an epoch;
* :func:`compute_metrics` / :func:`metrics_by_split`: AUROC, AUPRC, MCC, accuracy (classification) or
  Pearson, Spearman, MSE (regression);
* :func:`output_scores` turns a head's logits into scores and :func:`task_loss` is the one loss of the region
  tasks (the fine-tuned head and the linear models alike).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics import Metric

LN2 = math.log(2.0)


class BitsPerBase(Metric):
    """Sums of per-base negative log-likelihood, weighted loss and correct arg-max over an epoch (DDP-synced)."""

    full_state_update = False

    def __init__(self):
        super().__init__()
        for name in ("nll", "weighted_nll", "weight", "correct", "count"):
            self.add_state(name, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, nll: torch.Tensor, weight: torch.Tensor, correct: torch.Tensor) -> None:
        self.nll += nll.double().sum()
        self.weighted_nll += (nll.double() * weight.double()).sum()
        self.weight += weight.double().sum()
        self.correct += correct.double().sum()
        self.count += nll.numel()

    def compute(self) -> dict[str, torch.Tensor]:
        n = self.count.clamp(min=1)
        nll = self.nll / n
        return {
            "loss": (self.weighted_nll / self.weight.clamp(min=1e-12)).float(),
            "nll": nll.float(),
            "bpb": (nll / LN2).float(),
            "ppl": torch.exp(nll).float(),
            "acc": (self.correct / n).float(),
            "n_bases": self.count.float(),
        }


def output_scores(logits: torch.Tensor, task: str) -> torch.Tensor:
    """Head outputs (N, n_out) -> scores: P(class 1) (N,), class probabilities (N, C) or values (N,)."""
    if task == "binary":
        return torch.sigmoid(logits[:, 0])
    if task == "multiclass":
        return torch.softmax(logits, dim=-1)
    return logits[:, 0]


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


def task_loss(logits: torch.Tensor, y: torch.Tensor, task: str, weights: torch.Tensor | None = None) -> torch.Tensor:
    """The loss of a region head (N, n_out): binary cross-entropy (``weights`` gives the positive class the
    weight ``weights[1] / weights[0]``), cross-entropy (per-class ``weights``), or mean squared error."""
    target = y.to(torch.promote_types(logits.dtype, torch.float32))  # float64 stays, bf16 logits get float32 targets
    if task == "binary":
        pos_weight = None if weights is None else weights[1] / weights[0]
        return F.binary_cross_entropy_with_logits(logits[:, 0], target, pos_weight=pos_weight)
    if task == "multiclass":
        return F.cross_entropy(logits, y.long(), weight=weights)
    return F.mse_loss(logits[:, 0], target)
