"""Nucleotide tokenizer: one id per base, specials after the bases, soft-mask kept as a separate bit.

Ids: A=0, C=1, G=2, T=3, N=4, then <pad>=5, <mask>=6, <cls>=7. The four bases come first so that
the complement of a base id ``b`` is ``3 - b`` and a masked-LM head can predict over ``NUM_BASES``.
Every IUPAC ambiguity code (R, Y, K, M, S, W, B, D, H, V) and any other letter reads as N.
Lowercase (soft-masked, usually repeat) bases encode to the same id as uppercase; the case is
returned as a boolean mask beside the ids.

In the on-disk token cache each base is one byte: the id in the low bits and the soft-mask flag in
bit 7 (:func:`pack` / :func:`unpack`).
"""

from __future__ import annotations

import numpy as np
import torch

from genossm.vocab import (  # noqa: F401  (the ids, the vocabulary and the complement live in genossm.vocab)
    A,
    C,
    CLS,
    COMPLEMENT,
    G,
    MASK,
    N,
    NUM_BASES,
    PAD,
    VOCAB,
    VOCAB_SIZE,
    T,
    check_vocab,
    complement,
    vocab_dict,
)

SOFTMASK_BIT = np.uint8(0x80)
ID_BITS = np.uint8(0x7F)

# byte -> id; every letter not A/C/G/T (IUPAC codes included) is N; non-letters are N too
_ENCODE = np.full(256, N, dtype=np.uint8)
for _letter, _id in zip("ACGT", (A, C, G, T)):
    _ENCODE[ord(_letter)] = _id
    _ENCODE[ord(_letter.lower())] = _id
_ENCODE[ord("U")] = T
_ENCODE[ord("u")] = T

_LOWER = np.zeros(256, dtype=bool)
_LOWER[ord("a") : ord("z") + 1] = True

_DECODE = np.frombuffer(b"ACGTN-?^", dtype=np.uint8)  # one printable byte per id, for decode()

def _as_bytes(seq) -> np.ndarray:
    if isinstance(seq, str):
        seq = seq.encode("ascii", errors="replace")
    if isinstance(seq, (bytes, bytearray, memoryview)):
        return np.frombuffer(seq, dtype=np.uint8)
    arr = np.asarray(seq)
    if arr.dtype != np.uint8:
        raise TypeError(f"expected str, bytes or a uint8 array of ASCII codes, got {arr.dtype}")
    return arr


def encode(seq) -> np.ndarray:
    """Sequence (str, bytes or uint8 ASCII array) -> uint8 token ids."""
    return _ENCODE[_as_bytes(seq)]


def encode_with_softmask(seq) -> tuple[np.ndarray, np.ndarray]:
    """Sequence -> (uint8 token ids, bool soft-mask: True where the input base was lowercase)."""
    raw = _as_bytes(seq)
    return _ENCODE[raw], _LOWER[raw]


def decode(tokens, softmask=None) -> str:
    """Token ids (numpy or torch, 1-D) -> string; soft-masked positions come back lowercase."""
    ids = tokens.detach().cpu().numpy() if isinstance(tokens, torch.Tensor) else np.asarray(tokens)
    out = _DECODE[ids.astype(np.intp)]
    if softmask is not None:
        sm = softmask.detach().cpu().numpy() if isinstance(softmask, torch.Tensor) else np.asarray(softmask)
        out = np.where(sm & (ids < NUM_BASES + 1), out | 0x20, out)  # ASCII lowercase = set bit 5
    return out.astype(np.uint8).tobytes().decode("ascii")


def reverse_complement(tokens, softmask=None):
    """Reverse complement along the last axis; with ``softmask`` returns (ids, softmask) both reversed."""
    if isinstance(tokens, torch.Tensor):
        rc = complement(tokens).flip(-1)
        return rc if softmask is None else (rc, softmask.flip(-1))
    rc = complement(tokens)[..., ::-1]
    return rc if softmask is None else (rc, np.asarray(softmask)[..., ::-1])


def pack(tokens: np.ndarray, softmask: np.ndarray) -> np.ndarray:
    """(ids, soft-mask) -> one uint8 per base: id in the low bits, soft-mask in bit 7."""
    return tokens | (softmask.astype(np.uint8) << 7)


def unpack(packed):
    """Inverse of :func:`pack` for numpy or torch uint8 arrays -> (ids, bool soft-mask)."""
    if isinstance(packed, torch.Tensor):
        return packed & 0x7F, (packed & 0x80) != 0
    return packed & ID_BITS, (packed & SOFTMASK_BIT) != 0


class Tokenizer:
    """Object form of this module, for code that carries a tokenizer around (and for saved models)."""

    vocab = VOCAB
    vocab_size = VOCAB_SIZE
    num_bases = NUM_BASES
    pad_id, mask_id, cls_id, n_id = PAD, MASK, CLS, N

    encode = staticmethod(encode)
    encode_with_softmask = staticmethod(encode_with_softmask)
    decode = staticmethod(decode)
    complement = staticmethod(complement)
    reverse_complement = staticmethod(reverse_complement)

    def to_dict(self) -> dict:
        return vocab_dict()

    @classmethod
    def check_compatible(cls, saved: dict) -> None:
        """Raise ValueError when a saved model's vocabulary differs from this tokenizer's."""
        check_vocab(saved)
