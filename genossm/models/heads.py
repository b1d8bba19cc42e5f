"""Heads on top of the backbone: the nucleotide LM head and a sequence-level head.

``LMHead`` predicts A, C, G, T (ids 0..3, so the complement of base b is 3 - b). With reverse-complement
strands (hidden = [forward strand | reverse-complement strand], each d_model wide) the logits are

    logits[t, b] = f(h_fwd[t])[b] + f(h_rc[t])[3 - b]

which makes the head RC-equivariant: swapping the strands and reversing positions (what the backbone
does to its output when the input is reverse-complemented) gives the complement-permuted,
position-reversed logits.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

from genossm.vocab import NUM_BASES

POOLINGS = ("mean", "center")
# accepted for one release: no <cls> token is put in front of a sequence, so "cls" pools position 0
DEPRECATED_POOLINGS = ("cls",)
CLS_POOLING_WARNING = (
    "pooling=cls is deprecated and will be removed in the next release: genossm puts no <cls> token in front of a "
    "sequence, so cls pooling takes the first position of the window, which for a region centred and padded to "
    "region_len is a <pad> position; use pooling=mean or pooling=center"
)


class LMHead(nn.Module):
    """Hidden (..., H) -> logits (..., 4). Tied: the weight is the embedding's first 4 rows (A, C, G, T)."""

    def __init__(self, d_model: int, rc_strands: bool = False, tied: bool = True, base_rows=None):
        super().__init__()
        self.rc_strands, self.tied = rc_strands, tied
        # the embedding rows of A, C, G, T when the vocabulary is a foreign checkpoint's (first four otherwise)
        self.base_rows = None if base_rows is None else list(base_rows)
        self.weight = None if tied else nn.Parameter(torch.randn(NUM_BASES, d_model) * 0.02)
        self.bias = nn.Parameter(torch.zeros(NUM_BASES))

    def forward(self, h: torch.Tensor, embedding_weight: torch.Tensor | None = None) -> torch.Tensor:
        if not self.tied:
            w = self.weight  # (4, d_model)
        elif self.base_rows is None:
            w = embedding_weight[:NUM_BASES]
        else:
            w = embedding_weight[self.base_rows]
        if not self.rc_strands:
            return F.linear(h, w, self.bias)
        h_fwd, h_rc = h.chunk(2, dim=-1)
        return F.linear(h_fwd, w, self.bias) + F.linear(h_rc, w, self.bias).flip(-1)  # flip(-1): base -> complement


def pool(hidden: torch.Tensor, pooling: str, valid: torch.Tensor | None = None) -> torch.Tensor:
    """(batch, L, H) -> (batch, H). ``valid`` (batch, L) bool marks real positions (padding excluded).

    mean: average over valid positions; center: the middle of the valid span ((first + last) // 2), or L // 2
    without ``valid``. ``cls`` (deprecated, with a FutureWarning) takes position 0, padding or not.
    """
    if pooling == "mean":
        if valid is None:
            return hidden.mean(dim=1)
        w = valid.to(hidden.dtype).unsqueeze(-1)  # (batch, L, 1)
        return (hidden * w).sum(1) / w.sum(1).clamp(min=1)
    if pooling == "cls":
        warnings.warn(CLS_POOLING_WARNING, FutureWarning, stacklevel=2)
        return hidden[:, 0]
    if pooling == "center":
        batch, length = hidden.shape[:2]
        if valid is None:
            idx = torch.full((batch,), length // 2, device=hidden.device, dtype=torch.long)
        else:
            pos = torch.arange(length, device=hidden.device).expand(batch, -1)
            first = torch.where(valid, pos, length).min(1).values
            last = torch.where(valid, pos, -1).max(1).values
            idx = ((first + last) // 2).clamp(0, length - 1)
        return hidden[torch.arange(batch, device=hidden.device), idx]
    raise ValueError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")


class SequenceHead(nn.Module):
    """Pool per-position features and map them to ``n_outputs`` (class logits or regression targets).

    ``forward(hidden (batch, L, in_dim), valid (batch, L) bool or None) -> (batch, n_outputs)``.
    """

    def __init__(self, in_dim: int, n_outputs: int, pooling: str = "mean", dropout: float = 0.0):
        super().__init__()
        if pooling not in POOLINGS + DEPRECATED_POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(in_dim, n_outputs)

    def forward(self, hidden: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        return self.proj(self.dropout(pool(hidden, self.pooling, valid)))
