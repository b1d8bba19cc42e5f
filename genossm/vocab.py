"""The token vocabulary every part of genossm shares (data, models, tasks): one id per base, A=0 C=1 G=2 T=3
first (so the complement of base ``b`` is ``3 - b``), then N and the specials; and the complement of ids.

A leaf module (numpy and torch only), so that models need not import the data package; the tokenizer itself
(reading letters, soft-masks, packing) is :mod:`genossm.data.tokenizer`.
"""

from __future__ import annotations

import numpy as np
import torch

VOCAB: tuple[str, ...] = ("A", "C", "G", "T", "N", "<pad>", "<mask>", "<cls>")
A, C, G, T, N, PAD, MASK, CLS = range(8)
NUM_BASES = 4
VOCAB_SIZE = len(VOCAB)

# id -> complement id: bases swap A<->T and C<->G, N and specials map to themselves
COMPLEMENT = np.arange(VOCAB_SIZE, dtype=np.uint8)
COMPLEMENT[[A, C, G, T]] = [T, G, C, A]
_COMPLEMENT_T = torch.from_numpy(COMPLEMENT.astype(np.int64))


def complement(tokens):
    """Complement of token ids, numpy or torch, any shape (no flip)."""
    if isinstance(tokens, torch.Tensor):
        table = _COMPLEMENT_T.to(tokens.device)
        return table[tokens.long()].to(tokens.dtype)
    return COMPLEMENT[np.asarray(tokens)]


def vocab_dict() -> dict:
    """The vocabulary as saved beside a model (``config.json``'s ``tokenizer``)."""
    return {"vocab": list(VOCAB), "num_bases": NUM_BASES, "pad_id": PAD, "mask_id": MASK, "cls_id": CLS, "n_id": N}


def check_vocab(saved: dict) -> None:
    """Raise ValueError when a saved model's vocabulary differs from genossm's."""
    if list(saved.get("vocab", [])) != list(VOCAB):
        raise ValueError(f"saved vocabulary {saved.get('vocab')} differs from genossm's {list(VOCAB)}")
