"""Plots the workflows draw: training curves, ROC/PR curves (or a scatter) of region predictions, the
saturation-mutagenesis heatmap. Each is written atomically as PNG."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from genossm.atomic import atomic_path


def plot_history(history, path: str | os.PathLike, baselines: dict | None = None, title: str = "",
                 causal: bool = False) -> Path:
    """Two panels (loss; bits per base with the baselines as horizontal lines), written atomically as PNG.

    The training curve of a masked LM is not comparable with validation: in training 10 % of the chosen bases
    stay visible (80/10/10 corruption), so it always reads lower; in validation every chosen base is masked.
    The labels say so. Legends sit below the panels, never over the curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_bpb) = plt.subplots(1, 2, figsize=(11, 4.8))
    train_label = "train (next base)" if causal else "train (80/10/10 masking: reads low)"
    val_label = "validation (next base)" if causal else "validation (every chosen base masked)"
    if history.train:
        steps, loss, bpb = zip(*history.train)
        ax_loss.plot(steps, loss, label=train_label, alpha=0.7)
        ax_bpb.plot(steps, bpb, label=train_label, alpha=0.7)
    if history.val:
        steps, loss, bpb = zip(*history.val)
        ax_loss.plot(steps, loss, "o-", label=val_label)
        ax_bpb.plot(steps, bpb, "o-", label=val_label)
    if baselines:
        ax_bpb.axhline(baselines["composition_entropy"], color="grey", ls="--", label="composition entropy (validation)")
        ax_bpb.axhline(baselines["best_markov"], color="black", ls=":",
                       label=f"best Markov, k={baselines['best_order']} (validation)")
    loss_title = "next-base loss (causal LM)" if causal else "masked-LM loss"
    ax_loss.set(xlabel="step", ylabel="loss (nats)", title=loss_title)
    ax_bpb.set(xlabel="step", ylabel="bits per base", title="bits per base")
    for ax in (ax_loss, ax_bpb):
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=8, frameon=False)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_curves(task: str, y: torch.Tensor, scores: dict[str, torch.Tensor], folder, title: str = "",
                metrics: dict[str, dict] | None = None) -> list[Path]:
    """ROC and PR curves (classification) or predicted-vs-true scatter (regression), one line per method.

    The legend gives each method's AUROC/AUPRC from ``metrics`` (``compute_metrics`` on the same regions: the
    numbers of the metrics table, macro-averaged over classes for a multiclass task, "-" where the table has
    none) and the title the number of regions and of positives. A multiclass task's curve is micro-averaged
    (every region-class pair one decision), which the title says."""
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
    n_text = f"n = {len(yi):,} regions"
    if task == "binary":
        n_text += f", {int(yi.sum()):,} positive"
    else:
        n_text += f", {len(torch.unique(yi))} classes; curves micro-averaged, AUC macro-averaged"

    def value(name, key, fallback):
        if metrics is None or name not in metrics:
            return fallback()
        v = metrics[name].get(key)
        return "-" if v is None else f"{v:.3f}"

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
                auc = value(name, "auroc", lambda: f"{float(M.auroc(s_flat, y_flat, task='binary')):.3f}")
                ax.plot(fpr.numpy(), tpr.numpy(), label=f"{name} (AUROC {auc})")
            else:
                precision, recall, _ = M.precision_recall_curve(s_flat, y_flat, task="binary")
                ap = value(name, "auprc", lambda: f"{float(M.average_precision(s_flat, y_flat, task='binary')):.3f}")
                ax.plot(recall.numpy(), precision.numpy(), label=f"{name} (AUPRC {ap})")
        if kind == "roc":
            ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
            ax.set(xlabel="false positive rate", ylabel="true positive rate")
        else:
            ax.axhline(float(F.one_hot(yi).float().mean() if task == "multiclass" else yi.float().mean()), color="grey", lw=0.8, ls="--")
            ax.set(xlabel="recall", ylabel="precision")
        ax.set_title(f"{title}\n{n_text}" if title else n_text, fontsize=9)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=1, fontsize=8, frameon=False)
        path = folder / f"{kind}.png"
        with atomic_path(path, ".png") as tmp:
            fig.savefig(tmp, dpi=120, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
    return written


SEQUENCE_READABLE = 200  # positions up to which the heatmap spells out the reference sequence


def heatmap_figure(rows: list[tuple[int, str, str, float]], contig: str | None = None):
    """The saturation heatmap as a matplotlib figure (see :func:`draw_heatmap`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    positions = sorted({r[0] for r in rows})
    ref_at = {pos: ref for pos, ref, _alt, _llr in rows}
    col = {p: i for i, p in enumerate(positions)}
    grid = np.full((4, len(positions)), np.nan)
    for pos, _ref, alt, llr in rows:
        if alt in "ACGT" and len(alt) == 1:
            grid[" ACGT".index(alt) - 1, col[pos]] = llr
    finite = np.abs(grid[np.isfinite(grid)])
    vmax = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    n = len(positions)
    spell = 0 < n <= SEQUENCE_READABLE
    # a short region gets room for one letter per position; a long one at most 40 inches
    width = min(40.0, max(6.0, n / 60, 0.13 * n + 2.5 if spell else 0.0))
    fig, ax = plt.subplots(figsize=(width, 3.4), layout="constrained")
    cmap = matplotlib.colormaps["RdBu_r"].copy()
    cmap.set_bad("0.88")  # the reference base of each column (no substitution to score)
    im = ax.imshow(grid, aspect="auto", cmap=cmap, vmin=-vmax, vmax=vmax, interpolation="nearest",
                   extent=(positions[0] - 0.5, positions[-1] + 0.5, 3.5, -0.5) if positions else None)
    ax.set_yticks(range(4), list("ACGT"))
    ax.set_ylabel("alt base")
    # genome coordinates as written (1-based, thousands separated), never matplotlib's offset notation;
    # about one label per inch so that they cannot overlap
    ax.xaxis.set_major_locator(MaxNLocator(nbins=max(2, int(width * 0.9)), integer=True))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{int(round(x)):,}"))
    where = f"{contig}" if contig else "the contig"
    ax.set_xlabel(f"position on {where} (1-based)")
    if spell:
        top = ax.secondary_xaxis("top")
        top.set_xticks(positions, [ref_at[p] for p in positions], fontsize=7, family="monospace")
        top.tick_params(length=0)
        top.set_xlabel("reference", fontsize=8)
        for p in positions:
            if ref_at[p] in "ACGT":
                ax.text(p, "ACGT".index(ref_at[p]), ref_at[p], ha="center", va="center", fontsize=6, color="0.45")
    span = f"{where}:{positions[0]:,}-{positions[-1]:,} ({n:,} bp)" if positions else where
    ax.set_title(f"genossm saturation mutagenesis, {span}", fontsize=10, loc="left")
    fig.colorbar(im, ax=ax, label="alt − ref, nats\nnegative = alt less likely", shrink=0.95)
    return fig


def draw_heatmap(rows: list[tuple[int, str, str, float]], path: str | os.PathLike, contig: str | None = None) -> Path:
    """Saturation mutagenesis heatmap: one column per position (genome coordinates), one row per alt base
    (A, C, G, T), colour = LLR of that substitution (alt − ref, nats; blue: alt less likely, red: more
    likely); the reference base's cell is grey. Up to 200 positions the reference sequence is spelled along
    the top. PNG, or SVG/PDF by the file's extension (SVG text stays text)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fmt = path.suffix.lower().lstrip(".") if path.suffix.lower() in (".svg", ".pdf", ".png") else "png"
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        fig = heatmap_figure(rows, contig)
        with atomic_path(path, f".{fmt}") as tmp:
            fig.savefig(tmp, dpi=100, format=fmt, bbox_inches="tight")
    plt.close(fig)
    return path


def _interval_text(m: dict | None) -> str:
    if not m or m.get("value") is None:
        return "-"
    text = f"{m['value']:.3f}"
    if m.get("low") is not None:
        text += f" [{m['low']:.3f}, {m['high']:.3f}]"
    return text


def plot_variant_evaluation(task: str, y, predictors: dict, metrics: dict, path: str | os.PathLike,
                            title: str = "") -> Path:
    """``genossm evaluate-variants``' plot, written atomically: binary labels, the precision-recall curve of every
    predictor (a higher score called positive first) with the fraction of positives as the random line;
    real-valued labels, one scatter panel per predictor against the label. The legend and panel titles carry
    the metrics table's numbers with their 95 % intervals (``metrics``: the predictors' entry of
    :func:`genossm.tasks.variant_metrics.evaluate_predictors`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y = np.asarray(y, dtype=np.float64)
    path = Path(path)
    if task == "binary":
        fig, ax = plt.subplots(figsize=(6, 5.5))
        for name, score in predictors.items():
            score = np.asarray(score, dtype=np.float64)
            order = np.argsort(-score, kind="mergesort")
            s, yy = score[order], y[order]
            ends = np.r_[np.flatnonzero(s[1:] != s[:-1]), len(s) - 1]
            tp, fp = np.cumsum(yy)[ends], np.cumsum(1 - yy)[ends]
            recall = tp / max(tp[-1], 1)
            precision = tp / np.maximum(tp + fp, 1)
            # precision P_k over the recall gained at threshold k: the area under the steps is the AUPRC
            recall, precision = np.r_[0.0, recall], np.r_[precision[:1], precision]
            ax.plot(recall, precision, drawstyle="steps-pre",
                    label=f"{name} (AUPRC {_interval_text(metrics.get(name, {}).get('auprc'))})")
        ax.axhline(float(y.mean()), color="grey", lw=0.8, ls="--", label=f"random ({y.mean():.3f})")
        ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
        n_text = f"n = {len(y):,} variants, {int(y.sum()):,} positive; 95 % bootstrap intervals"
        ax.set_title(f"{title}\n{n_text}" if title else n_text, fontsize=9)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=1, fontsize=8, frameon=False)
        ax.grid(alpha=0.3)
        suffix = ".png"
    else:
        n = max(len(predictors), 1)
        cols = min(n, 3)
        rows = (n + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 4 * rows), squeeze=False)
        for ax, (name, score) in zip(axes.ravel(), predictors.items()):
            ax.scatter(np.asarray(score, dtype=np.float64), y, s=8, alpha=0.6)
            ax.set(xlabel=name, ylabel="label")
            ax.set_title(f"Spearman {_interval_text(metrics.get(name, {}).get('spearman'))}", fontsize=8)
            ax.grid(alpha=0.3)
        for ax in axes.ravel()[len(predictors):]:
            ax.set_axis_off()
        if title:
            fig.suptitle(f"{title}\nn = {len(y):,} variants; 95 % bootstrap intervals", fontsize=9)
        fig.tight_layout()
        suffix = ".png"
    with atomic_path(path, suffix) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
