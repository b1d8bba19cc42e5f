"""The k-mer baseline for region tasks: k-mer frequency vectors and a linear model on them.

Each region becomes its k-mer frequency vector (k-mers containing N or padding are skipped) and the same
:func:`genossm.tasks.baselines.linear.fit_linear` as the linear probe fits it, so the two are directly
comparable.
"""

from __future__ import annotations

import numpy as np
import torch

from genossm.data.tokenizer import NUM_BASES
from genossm.tasks.baselines.linear import LinearModel, fit_linear


def kmer_features(tokens: torch.Tensor, valid: torch.Tensor | None, k: int, canonical: bool = False) -> torch.Tensor:
    """(N, L) token ids -> (N, 4**k) k-mer frequencies over the k-mers made only of valid A/C/G/T.

    ``canonical`` adds each k-mer's reverse complement counts (strand-symmetric features).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    tokens = tokens.long()
    n, length = tokens.shape
    counts = torch.zeros(n, NUM_BASES**k, dtype=torch.float64)
    if length < k:
        return counts.float()
    ok = tokens < NUM_BASES
    if valid is not None:
        ok &= valid.bool()
    windows = tokens.unfold(1, k, 1).clamp(max=NUM_BASES - 1)  # (N, L-k+1, k)
    powers = NUM_BASES ** torch.arange(k - 1, -1, -1)
    index = (windows * powers).sum(-1)  # (N, L-k+1) base-4 number of each k-mer
    keep = ok.unfold(1, k, 1).all(-1)
    counts.scatter_add_(1, index, keep.to(torch.float64))
    if canonical:
        rc_index = ((NUM_BASES - 1 - windows).flip(-1) * powers).sum(-1)
        counts.scatter_add_(1, rc_index, keep.to(torch.float64))
    return (counts / counts.sum(1, keepdim=True).clamp(min=1)).float()


def kmer_baseline(
    tokens: torch.Tensor,
    valid: torch.Tensor,
    y: torch.Tensor,
    splits,
    task: str,
    n_classes: int = 2,
    k: int = 4,
    canonical: bool = False,
    balance: bool = True,
) -> tuple[LinearModel, torch.Tensor]:
    """Fit on the train split (L2 chosen on val); return the model and its scores for every region."""
    splits = np.asarray(splits)
    feats = kmer_features(tokens, valid, k, canonical)
    train = torch.from_numpy(splits == "train")
    val = torch.from_numpy(splits == "val")
    model = fit_linear(feats[train], y[train], task, n_classes, feats[val], y[val], balance=balance)
    return model, model.predict(feats)
