"""Plots the workflows draw: training curves, ROC/PR curves (or a scatter) of region predictions, the
saturation-mutagenesis heatmap. Each is written atomically as PNG."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from genossm.errors import atomic_path


def plot_history(history, path: str | os.PathLike, baselines: dict | None = None, title: str = "") -> Path:
    """Two panels (loss; bits per base with the baselines as horizontal lines), written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_bpb) = plt.subplots(1, 2, figsize=(11, 4))
    if history.train:
        steps, loss, bpb = zip(*history.train)
        ax_loss.plot(steps, loss, label="train", alpha=0.7)
        ax_bpb.plot(steps, bpb, label="train", alpha=0.7)
    if history.val:
        steps, loss, bpb = zip(*history.val)
        ax_loss.plot(steps, loss, "o-", label="validation")
        ax_bpb.plot(steps, bpb, "o-", label="validation")
    if baselines:
        ax_bpb.axhline(baselines["composition_entropy"], color="grey", ls="--", label="composition entropy")
        ax_bpb.axhline(baselines["best_markov"], color="black", ls=":", label=f"Markov k={baselines['best_order']}")
    ax_loss.set(xlabel="step", ylabel="loss (nats)", title="masked-LM loss")
    ax_bpb.set(xlabel="step", ylabel="bits per base", title="bits per base")
    for ax in (ax_loss, ax_bpb):
        ax.legend()
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return path


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


def draw_heatmap(rows: list[tuple[int, str, str, float]], path: str | os.PathLike) -> Path:
    """Saturation mutagenesis heatmap: one column per position, one row per base (A, C, G, T), colour = LLR
    of that substitution (blue: alt less likely, red: more likely); the reference base is left blank."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    positions = sorted({r[0] for r in rows})
    col = {p: i for i, p in enumerate(positions)}
    grid = np.full((4, len(positions)), np.nan)
    for pos, _ref, alt, llr in rows:
        if alt in "ACGT" and len(alt) == 1:
            grid[" ACGT".index(alt) - 1, col[pos]] = llr
    finite = np.abs(grid[np.isfinite(grid)])
    vmax = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    width = min(40.0, max(6.0, len(positions) / 60))
    fig, ax = plt.subplots(figsize=(width, 2.6))
    im = ax.imshow(grid, aspect="auto", cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest",
                   extent=(positions[0] - 0.5, positions[-1] + 0.5, 3.5, -0.5) if positions else None)
    ax.set_yticks(range(4), list("ACGT"))
    ax.set_xlabel("position (1-based)")
    ax.set_title("genossm saturation mutagenesis: LLR = log P(alt) - log P(ref)")
    fig.colorbar(im, ax=ax, label="LLR (nats)")
    fig.tight_layout()
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path
