"""What ``genossm evaluate-variants`` measures: how well variant scores separate labelled variants, with
bootstrap intervals, beside baselines scored on the same variants.

Every score is oriented before it gets here so that **a higher score predicts the positive label** (or a higher
real-valued label); the workflow does that from the user's ``direction=``, never from the labels.

* binary labels: :func:`auroc`, :func:`average_precision` (AUPRC) and :func:`auprc_by_chrom` (TraitGym's
  AUPRC weighted by chromosome: the AUPRC of each chromosome, averaged with the chromosome's number of
  positives as its weight);
* real-valued labels: :func:`spearman` and :func:`pearson`.

Each metric takes an optional ``weight``: one weight per variant (shape ``(n,)``), or one row of weights per
bootstrap resample (shape ``(B, n)``, then it returns ``B`` values at once). An integer weight ``k`` counts the
variant ``k`` times, so a resample (a variant or a match group drawn ``k`` times) is a row of counts
(:func:`bootstrap_counts`) and a metric on it equals the metric on the resampled variants written out.
Ties in a score are one threshold (as scikit-learn), and tied values share their mean rank (as scipy).

:func:`evaluate_predictors` gives every predictor's metrics with a percentile 95 % interval and, for the
model, the paired difference to each baseline in the same resamples; :func:`verdict` is the one sentence that
says whether the model beats every baseline beyond the interval.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

BINARY_METRICS = ("auroc", "auprc", "auprc_by_chrom")
REGRESSION_METRICS = ("spearman", "pearson")
METRIC_NAMES = {
    "auroc": "AUROC",
    "auprc": "AUPRC",
    "auprc_by_chrom": "AUPRC by chromosome",
    "spearman": "Spearman",
    "pearson": "Pearson",
}
INTERVAL = (2.5, 97.5)


def _weights(weight, n: int) -> tuple[np.ndarray, bool]:
    """(weights as a (B, n) float array, whether the caller gave one row or none)."""
    if weight is None:
        return np.ones((1, n)), True
    w = np.asarray(weight, dtype=np.float64)
    if w.ndim == 1:
        return w[None, :], True
    return w, False


def _out(values: np.ndarray, single: bool):
    return float(values[0]) if single else values


def _binary_counts(y, score, w) -> tuple[np.ndarray, np.ndarray]:
    """Weighted true and false positives (B, thresholds) when every score at or above each distinct score
    (highest first) is called positive."""
    order = np.argsort(-score, kind="mergesort")
    s, yy, ww = score[order], y[order], w[:, order]
    ends = np.r_[np.flatnonzero(s[1:] != s[:-1]), len(s) - 1]
    tp = np.cumsum(ww * yy, axis=1)[:, ends]
    fp = np.cumsum(ww * (1.0 - yy), axis=1)[:, ends]
    return tp, fp


def _check(y, score):
    y = np.asarray(y, dtype=np.float64)
    score = np.asarray(score, dtype=np.float64)
    if y.shape != score.shape or y.ndim != 1:
        raise ValueError(f"labels and scores must be 1-D of one length, got {y.shape} and {score.shape}")
    return y, score


def average_precision(y, score, weight=None):
    """AUPRC as average precision, ``sum_k (R_k - R_k-1) P_k`` over the distinct score thresholds (scikit-learn's
    ``average_precision_score``); NaN without a positive."""
    y, score = _check(y, score)
    w, single = _weights(weight, len(y))
    if len(y) == 0:
        return _out(np.full(len(w), np.nan), single)
    tp, fp = _binary_counts(y, score, w)
    pos = tp[:, -1:]
    called = tp + fp
    precision = np.divide(tp, called, out=np.zeros_like(tp), where=called > 0)
    recall = np.divide(tp, pos, out=np.zeros_like(tp), where=pos > 0)
    gain = np.diff(recall, axis=1, prepend=0.0)
    ap = (gain * precision).sum(axis=1)
    return _out(np.where(pos[:, 0] > 0, ap, np.nan), single)


def auroc(y, score, weight=None):
    """Area under the ROC curve (a tie between a positive and a negative counts one half); NaN unless both
    classes are present."""
    y, score = _check(y, score)
    w, single = _weights(weight, len(y))
    if len(y) == 0:
        return _out(np.full(len(w), np.nan), single)
    tp, fp = _binary_counts(y, score, w)
    pos, neg = tp[:, -1:], fp[:, -1:]
    zero = np.zeros((len(w), 1))
    tpr = np.concatenate([zero, np.divide(tp, pos, out=np.zeros_like(tp), where=pos > 0)], axis=1)
    fpr = np.concatenate([zero, np.divide(fp, neg, out=np.zeros_like(fp), where=neg > 0)], axis=1)
    area = (np.diff(fpr, axis=1) * (tpr[:, 1:] + tpr[:, :-1]) / 2).sum(axis=1)
    return _out(np.where((pos[:, 0] > 0) & (neg[:, 0] > 0), area, np.nan), single)


def auprc_by_chrom(y, score, chrom, weight=None):
    """TraitGym's AUPRC weighted by chromosome: the AUPRC of each chromosome's variants, averaged with each
    chromosome's number of positives as its weight (a chromosome without a positive weighs nothing)."""
    y, score = _check(y, score)
    chrom = np.asarray(chrom)
    w, single = _weights(weight, len(y))
    total = np.zeros(len(w))
    positives = np.zeros(len(w))
    for c in np.unique(chrom):
        at = chrom == c
        if not y[at].any():
            continue
        n_pos = (w[:, at] * y[at]).sum(axis=1)
        ap = average_precision(y[at], score[at], w[:, at])
        total += np.where(n_pos > 0, np.nan_to_num(ap) * n_pos, 0.0)
        positives += n_pos
    return _out(np.divide(total, positives, out=np.full(len(w), np.nan), where=positives > 0), single)


def _midranks(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(B, n) ranks of ``x`` among the weighted variants (a variant of weight k is k tied copies), tied values
    sharing their mean rank: scipy's ``rankdata`` of the written-out resample."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    new = np.r_[True, xs[1:] != xs[:-1]] if len(xs) else np.zeros(0, bool)
    starts = np.flatnonzero(new)
    block = np.cumsum(new) - 1
    block_w = np.add.reduceat(w[:, order], starts, axis=1)
    before = np.cumsum(block_w, axis=1) - block_w
    ranks = np.empty_like(w)
    ranks[:, order] = (before + (block_w + 1) / 2)[:, block]
    return ranks


def _weighted_pearson(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Pearson correlation of rows ``a``, ``b`` (B, n) with weights ``w`` (B, n); NaN where one is constant."""
    total = w.sum(axis=1, keepdims=True)
    safe = np.where(total > 0, total, 1.0)
    ma = (w * a).sum(axis=1, keepdims=True) / safe
    mb = (w * b).sum(axis=1, keepdims=True) / safe
    da, db = a - ma, b - mb
    cov = (w * da * db).sum(axis=1)
    va, vb = (w * da * da).sum(axis=1), (w * db * db).sum(axis=1)
    # a constant row has a variance of rounding error only, relative to its size
    varies_a = va > 1e-12 * np.maximum((w * a * a).sum(axis=1), 1e-300)
    varies_b = vb > 1e-12 * np.maximum((w * b * b).sum(axis=1), 1e-300)
    return np.divide(cov, np.sqrt(va * vb), out=np.full(len(w), np.nan), where=varies_a & varies_b)


def pearson(label, score, weight=None):
    """Pearson correlation of score and label; NaN when either is constant."""
    label, score = _check(label, score)
    w, single = _weights(weight, len(label))
    values = _weighted_pearson(np.broadcast_to(score, w.shape), np.broadcast_to(label, w.shape), w)
    return _out(values, single)


def spearman(label, score, weight=None):
    """Spearman rank correlation of score and label (Pearson of the mean ranks); NaN when either is constant."""
    label, score = _check(label, score)
    w, single = _weights(weight, len(label))
    if len(label) == 0:
        return _out(np.full(len(w), np.nan), single)
    values = _weighted_pearson(_midranks(score, w), _midranks(label, w), w)
    return _out(values, single)


def metric_values(task: str, y, score, chrom, weight=None) -> dict:
    """Every metric of ``task`` (``binary`` | ``regression``) for one oriented score."""
    if task == "binary":
        return {"auroc": auroc(y, score, weight), "auprc": average_precision(y, score, weight),
                "auprc_by_chrom": auprc_by_chrom(y, score, chrom, weight)}
    return {"spearman": spearman(y, score, weight), "pearson": pearson(y, score, weight)}


def random_values(task: str, y, chrom) -> dict:
    """What a score with no information reaches on average: AUROC 0.5, AUPRC the fraction of positives, the
    chromosome-weighted AUPRC the positive-weighted mean of each chromosome's fraction of positives (0.10 for
    TraitGym's one causal variant per nine controls), correlations 0."""
    y = np.asarray(y, dtype=np.float64)
    if task != "binary":
        return {"spearman": 0.0, "pearson": 0.0}
    chrom = np.asarray(chrom)
    n_pos = y.sum()
    by_chrom = sum(y[chrom == c].sum() * y[chrom == c].mean() for c in np.unique(chrom)) / n_pos if n_pos else math.nan
    return {"auroc": 0.5, "auprc": float(y.mean()) if len(y) else math.nan, "auprc_by_chrom": float(by_chrom)}


BLOCK_ELEMENTS = 1 << 22  # resample weights held at once (rows x variants): bounded memory for any input


def bootstrap_blocks(units, n_boot: int, seed: int = 0, block_elements: int = BLOCK_ELEMENTS):
    """Resample weights in blocks of rows (each (rows, n), together ``n_boot`` rows): the distinct ``units``
    (match groups, or one per variant) are drawn with replacement, as many as there are, and each variant gets
    the number of times its unit was drawn. The draws come from one seeded stream in order, so the resamples
    do not depend on the block size."""
    units = np.asarray(units)
    _, inverse = np.unique(units, return_inverse=True)
    n_units = int(inverse.max()) + 1 if len(inverse) else 0
    rng = np.random.default_rng(seed)
    rows = max(1, int(block_elements) // max(len(units), 1))
    for first in range(0, int(n_boot), rows):
        n = min(rows, int(n_boot) - first)
        drawn = rng.integers(0, max(n_units, 1), size=(n, n_units))
        offsets = np.arange(n)[:, None] * n_units
        counts = np.bincount((drawn + offsets).ravel(), minlength=n * n_units).reshape(n, n_units)
        yield counts[:, inverse].astype(np.float64)


def bootstrap_counts(units, n_boot: int, seed: int = 0) -> np.ndarray:
    """All ``n_boot`` rows of :func:`bootstrap_blocks` as one (n_boot, n) array."""
    blocks = list(bootstrap_blocks(units, n_boot, seed))
    return np.concatenate(blocks) if blocks else np.zeros((0, len(np.asarray(units))))


def _interval(values: np.ndarray) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return math.nan, math.nan
    low, high = np.percentile(values, INTERVAL)
    return float(low), float(high)


def _clean(x) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def evaluate_predictors(task: str, y, predictors: dict[str, np.ndarray], chrom, units=None, n_boot: int = 1000,
                        seed: int = 0, model: str | None = None) -> dict:
    """Metrics of every predictor on the same variants, each with a bootstrap 95 % interval (percentiles of
    ``n_boot`` resamples of ``units``: the match groups, or the variants themselves), and for ``model`` the
    paired difference to every other predictor (model minus it, in the same resamples).

    Returns ``{"n", "n_positive", "n_units", "random": {metric: value}, "predictors": {name: {metric: {"value",
    "low", "high"}}}, "versus": {name: {metric: {"difference", "low", "high"}}}}`` (None where undefined)."""
    y = np.asarray(y, dtype=np.float64)
    chrom = np.asarray(chrom)
    units = np.arange(len(y)) if units is None else np.asarray(units)
    result: dict = {"n": int(len(y)), "n_units": int(len(np.unique(units))), "n_boot": int(n_boot)}
    if task == "binary":
        result["n_positive"] = int(y.sum())
    result["random"] = {k: _clean(v) for k, v in random_values(task, y, chrom).items()}
    scores = {name: np.asarray(score, dtype=np.float64) for name, score in predictors.items()}
    point = {name: metric_values(task, y, score, chrom) for name, score in scores.items()}
    parts: dict = {name: {metric: [] for metric in point[name]} for name in scores}
    for counts in (bootstrap_blocks(units, n_boot, seed) if n_boot else ()):
        for name, score in scores.items():  # every predictor in the same resamples: paired differences
            for metric, values in metric_values(task, y, score, chrom, counts).items():
                parts[name][metric].append(values)
    boot = {name: ({metric: np.concatenate(v) for metric, v in by_metric.items()} if n_boot else None)
            for name, by_metric in parts.items()}
    result["predictors"] = {}
    for name in predictors:
        row = {}
        for metric, value in point[name].items():
            low, high = _interval(boot[name][metric]) if boot[name] is not None else (math.nan, math.nan)
            row[metric] = {"value": _clean(value), "low": _clean(low), "high": _clean(high)}
        result["predictors"][name] = row
    result["versus"] = {}
    if model is not None and model in predictors:
        for name in predictors:
            if name == model:
                continue
            row = {}
            for metric in point[model]:
                diff = point[model][metric] - point[name][metric]
                if boot[model] is not None:
                    low, high = _interval(boot[model][metric] - boot[name][metric])
                else:
                    low = high = math.nan
                row[metric] = {"difference": _clean(diff), "low": _clean(low), "high": _clean(high)}
            result["versus"][name] = row
    return result


def defined(task: str, y) -> str | None:
    """Why the metrics of ``task`` cannot be computed on these labels (None when they can)."""
    y = np.asarray(y, dtype=np.float64)
    if task == "binary":
        n_pos = int(y.sum())
        if n_pos == 0:
            return "no positive"
        if n_pos == len(y):
            return "no negative"
        return None
    if len(y) < 3:
        return "fewer than 3 variants"
    if np.all(y == y[0]):
        return "one label value only"
    return None


def primary_metric(task: str, chrom) -> str:
    """The metric the verdict is about: Spearman for real-valued labels; for binary labels the chromosome-
    weighted AUPRC when the variants lie on several chromosomes, else the AUPRC (the two are then equal)."""
    if task != "binary":
        return "spearman"
    return "auprc_by_chrom" if len(np.unique(np.asarray(chrom))) > 1 else "auprc"


def _signed(x: float | None) -> str:
    return "-" if x is None else f"{x:+.3f}"


def verdict(result: dict, model: str, baselines: Sequence[str], metric: str, unit: str = "variants") -> str:
    """One sentence: does ``model`` beat every baseline on ``metric`` beyond the 95 % interval of the paired
    bootstrap difference (its lower end above 0)?"""
    name = METRIC_NAMES[metric]
    if model not in result["predictors"] or result["predictors"][model][metric]["value"] is None:
        return f"{model} has no {name} on these variants, so it cannot be compared with the baselines."
    if not baselines:
        return f"{model}: {name} {result['predictors'][model][metric]['value']:.3f}; there is no baseline to compare it with."
    parts, beaten = [], []
    for other in baselines:
        d = result["versus"].get(other, {}).get(metric, {})
        beats = d.get("low") is not None and d["low"] > 0
        beaten.append(beats)
        interval = (f" [{_signed(d.get('low'))}, {_signed(d.get('high'))}]" if d.get("low") is not None
                    else " (no interval)")
        parts.append(f"{other} {_signed(d.get('difference'))}{interval}")
    how = f"{name}, model minus baseline, 95 % interval of {result.get('n_boot', 0):,} paired resamples of {unit}"
    if all(beaten):
        return f"{model} beats every baseline beyond the 95 % interval ({how}: {'; '.join(parts)})."
    lost = [b for b, ok in zip(baselines, beaten) if not ok]
    return (f"{model} does NOT beat every baseline beyond the 95 % interval: not {', '.join(lost)} "
            f"({how}: {'; '.join(parts)}).")
