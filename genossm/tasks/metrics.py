"""What the tasks measure: bits per base of the masked LM, the region metrics, the region losses.

* :class:`BitsPerBase` (a torchmetrics ``Metric``, DDP-synced): per-base negative log-likelihood, weighted
  loss and arg-max accuracy over an epoch;
* :func:`compute_metrics` / :func:`metrics_by_split`: AUROC, AUPRC, MCC, accuracy (classification, binary at
  a threshold chosen on validation by :func:`choose_threshold`) or Pearson, Spearman, MSE (regression);
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
    """Sums of per-base negative log-likelihood, weighted loss and correct arg-max over an epoch (DDP-synced),
    and each window's sums, for the standard error of bits per base over windows (``bpb_se``)."""

    full_state_update = False

    def __init__(self):
        super().__init__()
        for name in ("nll", "weighted_nll", "weight", "correct", "count"):
            self.add_state(name, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("window_nll", default=[], dist_reduce_fx="cat")
        self.add_state("window_count", default=[], dist_reduce_fx="cat")

    def update(self, nll: torch.Tensor, weight: torch.Tensor, correct: torch.Tensor,
               window: torch.Tensor | None = None, n_windows: int | None = None) -> None:
        """``window`` (optional): the window (batch row) of each scored base, ``n_windows`` rows in the batch."""
        self.nll += nll.double().sum()
        self.weighted_nll += (nll.double() * weight.double()).sum()
        self.weight += weight.double().sum()
        self.correct += correct.double().sum()
        self.count += nll.numel()
        if window is not None:
            rows = int(n_windows if n_windows is not None else (int(window.max()) + 1 if window.numel() else 0))
            sums = torch.zeros(rows, dtype=torch.float64, device=nll.device).index_add_(0, window, nll.double())
            counts = torch.zeros(rows, dtype=torch.float64, device=nll.device).index_add_(
                0, window, torch.ones_like(nll, dtype=torch.float64))
            self.window_nll.append(sums)
            self.window_count.append(counts)

    def compute(self) -> dict[str, torch.Tensor]:
        n = self.count.clamp(min=1)
        nll = self.nll / n
        out = {
            "loss": (self.weighted_nll / self.weight.clamp(min=1e-12)).float(),
            "nll": nll.float(),
            "bpb": (nll / LN2).float(),
            "ppl": torch.exp(nll).float(),
            "acc": (self.correct / n).float(),
            "n_bases": self.count.float(),
        }
        if len(self.window_nll):  # a list of per-batch tensors, or one tensor once synced across DDP ranks
            sums = _cat(self.window_nll) / LN2
            counts = _cat(self.window_count)
            out["bpb_se"] = torch.tensor(ratio_standard_error(sums, counts), dtype=torch.float32)
            out["n_windows"] = (counts > 0).sum().float()
        return out


def _cat(state) -> torch.Tensor:
    return torch.cat(state) if isinstance(state, list) else state


def ratio_standard_error(sums, counts) -> float:
    """Standard error of ``sum(sums) / sum(counts)`` over windows (each window one draw: bases within a window
    are not independent), by the delta method; NaN with fewer than two windows that have bases."""
    sums = torch.as_tensor(sums, dtype=torch.float64)
    counts = torch.as_tensor(counts, dtype=torch.float64)
    keep = counts > 0
    sums, counts = sums[keep], counts[keep]
    m = int(counts.numel())
    if m < 2:
        return float("nan")
    ratio = sums.sum() / counts.sum()
    resid = sums - ratio * counts
    return float(torch.sqrt((resid**2).sum() / (m * (m - 1))) / counts.mean())


def output_scores(logits: torch.Tensor, task: str) -> torch.Tensor:
    """Head outputs (N, n_out) -> scores: P(class 1) (N,), class probabilities (N, C) or values (N,)."""
    if task == "binary":
        return torch.sigmoid(logits[:, 0])
    if task == "multiclass":
        return torch.softmax(logits, dim=-1)
    return logits[:, 0]


def choose_threshold(scores: torch.Tensor, y: torch.Tensor) -> float:
    """The score threshold with the highest MCC on (validation) ``scores`` of a binary task; ties go to the
    threshold nearest 0.5, and 0.5 is kept when the set has one class. Class weights in training shift a
    model's probabilities (a weighted positive class is predicted more often), so 0.5 is not its decision
    boundary: AUROC can be good while MCC and accuracy at 0.5 are poor."""
    s = scores.detach().double().cpu().numpy()
    t = y.detach().long().cpu().numpy()
    n_pos = int(t.sum())
    if len(t) == 0 or n_pos in (0, len(t)):
        return 0.5
    order = np.argsort(-s, kind="stable")
    s_sorted, t_sorted = s[order], t[order]
    # predicting positive for the top k scores, for every k at which the score changes
    tp = np.cumsum(t_sorted)
    fp = np.cumsum(1 - t_sorted)
    last = np.r_[s_sorted[1:] != s_sorted[:-1], True]
    tp, fp, cut = tp[last], fp[last], s_sorted[last]
    fn, tn = n_pos - tp, (len(t) - n_pos) - fp
    denom = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    mcc = np.where(denom > 0, (tp * tn - fp * fn) / np.where(denom > 0, denom, 1), 0.0)
    # a threshold between this score and the next lower one (a score above the threshold is called positive)
    below = np.r_[cut[1:], -np.inf]
    thresholds = np.where(np.isfinite(below), (cut + below) / 2, np.nextafter(cut, -np.inf))
    best = np.flatnonzero(mcc >= mcc.max() - 1e-12)
    pick = best[np.argmin(np.abs(thresholds[best] - 0.5))]
    return float(thresholds[pick])


MIN_THRESHOLD_SET = 100  # regions (and a fifth of them per class) a validation split needs to choose a threshold alone


def decision_threshold(scores: torch.Tensor, y: torch.Tensor, splits) -> tuple[float, str]:
    """(threshold, where it was chosen) for a binary task: on the validation split when it holds at least
    100 regions and 20 of each class; a smaller one (the shipped task's has 43) gives a threshold that
    swings with a handful of regions, so then train and validation together. 0.5 without either."""
    splits = np.asarray(splits)
    val = torch.from_numpy(splits == "val")
    n_val, n_pos = int(val.sum()), int(y[val].sum()) if bool(val.any()) else 0
    if n_val >= MIN_THRESHOLD_SET and min(n_pos, n_val - n_pos) >= MIN_THRESHOLD_SET // 5:
        return choose_threshold(scores[val], y[val]), "val"
    pooled = torch.from_numpy(np.isin(splits, ("train", "val")))
    if bool(pooled.any()):
        return choose_threshold(scores[pooled], y[pooled]), "train+val"
    return 0.5, "default"


def compute_metrics(task: str, scores: torch.Tensor, y: torch.Tensor, n_classes: int = 2,
                    threshold: float = 0.5) -> dict:
    """Metrics of ``scores`` (P(class 1), class probabilities, or values) against ``y``.

    Binary/multi-class: AUROC, AUPRC (average precision), MCC, accuracy (binary: a score above ``threshold`` is
    class 1; multi-class: argmax); regression: Pearson, Spearman, MSE. A metric that is undefined on this
    set (one class only) is None.
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
        called = (scores > threshold).long()  # as torchmetrics: a score above the threshold is class 1
        out["threshold"] = float(threshold)
        out["mcc"] = float(M.matthews_corrcoef(called, yi, task="binary"))
        out["accuracy"] = float(M.accuracy(called, yi, task="binary"))
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


def metrics_by_split(task: str, scores: torch.Tensor, y: torch.Tensor, splits, n_classes: int = 2,
                     threshold: float | None = None) -> dict:
    """:func:`compute_metrics` per split. A binary task's threshold is ``threshold`` when given, else chosen
    without the test split (:func:`decision_threshold`) and used for every split, so the test figures are honest;
    each split's metrics say where it came from (``threshold_from``)."""
    splits = np.asarray(splits)
    rows = {split: torch.from_numpy(splits == split) for split in ("train", "val", "test") if (splits == split).any()}
    source = "given"
    if task == "binary" and threshold is None:
        threshold, source = decision_threshold(scores, y, splits)
    out = {split: compute_metrics(task, scores[r], y[r], n_classes, threshold=threshold if threshold is not None else 0.5)
           for split, r in rows.items()}
    if task == "binary":
        for m in out.values():
            m["threshold_from"] = source
    return out


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
