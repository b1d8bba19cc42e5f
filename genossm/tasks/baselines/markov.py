"""Reference points for bits per base: the base-composition entropy and order-k Markov models.

A language model of DNA is only interesting if it predicts bases better than these: the entropy of
the evaluated bases' own A/C/G/T composition (order 0, a lower bound for every model that ignores
context) and a Markov chain of order ``k`` (the base given the ``k`` bases before it), fitted on the
training bases with add-``pseudocount`` smoothing and evaluated on the held-out bases.

Sequences are token-id arrays (``genossm.data.tokenizer`` ids, A=0 C=1 G=2 T=3, anything >= 4 is not
a base). A k-mer is counted only when all its bases are A/C/G/T. At the start of a sequence and right
after an N, fewer than ``k`` bases of context exist; those positions use the longest context available
(order ``min(k, bases since the start or the last N)``), so every base is scored by every model.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np

from genossm.data.tokenizer import NUM_BASES

LN2 = math.log(2.0)


def _as_ids(seq) -> np.ndarray:
    arr = np.asarray(seq)
    if arr.ndim != 1:
        raise ValueError(f"expected a 1-D array of token ids, got shape {arr.shape}")
    return arr.astype(np.int64, copy=False)


def _valid_run(ids: np.ndarray) -> np.ndarray:
    """run[t] = number of consecutive A/C/G/T bases ending at t (0 where ids[t] is not a base)."""
    valid = ids < NUM_BASES
    pos = np.arange(len(ids))
    last_invalid = np.maximum.accumulate(np.where(valid, -1, pos)) if len(ids) else pos
    return np.where(valid, pos - last_invalid, 0)


def _kmer_codes(ids: np.ndarray, k: int) -> np.ndarray:
    """code[t] = the (k+1)-mer ending at t read as a base-4 number (garbage where it holds a non-base)."""
    ids = np.where(ids < NUM_BASES, ids, 0)
    code = np.zeros(len(ids), dtype=np.int64)
    for j in range(k, -1, -1):  # ids[t-j] gets weight 4**j
        shifted = np.zeros(len(ids), dtype=np.int64)
        if j < len(ids):
            shifted[j:] = ids[: len(ids) - j]
        code = code * NUM_BASES + shifted
    return code


def composition_entropy(seqs: Iterable) -> float:
    """Entropy in bits of the A/C/G/T composition of ``seqs`` (N and specials ignored)."""
    counts = np.zeros(NUM_BASES, dtype=np.int64)
    for seq in seqs:
        ids = _as_ids(seq)
        counts += np.bincount(ids[ids < NUM_BASES], minlength=NUM_BASES)[:NUM_BASES]
    total = counts.sum()
    if total == 0:
        return float("nan")
    p = counts[counts > 0] / total
    return float(-(p * np.log2(p)).sum())


class MarkovBaseline:
    """Order-0..``max_order`` Markov chains over A/C/G/T with add-``pseudocount`` smoothing.

    >>> m = MarkovBaseline(max_order=2).fit([train_ids])
    >>> m.bits_per_base([val_ids])      # {0: 1.98, 1: 1.95, 2: 1.94}
    """

    def __init__(self, max_order: int = 8, pseudocount: float = 1.0):
        if not 0 <= max_order <= 12:
            raise ValueError(f"max_order must be between 0 and 12, got {max_order}")
        self.max_order = max_order
        self.pseudocount = pseudocount
        # counts[k][context, base]: how often ``base`` followed the k-mer ``context`` in the training bases
        self.counts = [np.zeros((NUM_BASES**k, NUM_BASES), dtype=np.int64) for k in range(max_order + 1)]

    def fit(self, seqs: Iterable) -> "MarkovBaseline":
        for seq in seqs:
            ids = _as_ids(seq)
            run = _valid_run(ids)
            for k in range(self.max_order + 1):
                ok = run >= k + 1
                codes = _kmer_codes(ids, k)[ok]
                self.counts[k] += np.bincount(codes, minlength=NUM_BASES ** (k + 1)).reshape(-1, NUM_BASES)
        return self

    def log2_probs(self, k: int) -> np.ndarray:
        """log2 P(base | context) as a (4**k, 4) table."""
        c = self.counts[k] + self.pseudocount
        return np.log2(c) - np.log2(c.sum(axis=1, keepdims=True))

    def total_bits(self, seqs: Iterable, orders: Sequence[int] | None = None,
                   per_sequence: list | None = None) -> tuple[dict[int, float], int]:
        """(sum of -log2 P over every A/C/G/T base of ``seqs``, per order; number of bases). ``per_sequence``: a
        list that receives ``({order: bits}, bases)`` of each sequence."""
        orders = list(range(self.max_order + 1)) if orders is None else list(orders)
        tables = {j: self.log2_probs(j).reshape(-1) for j in range(max(orders) + 1)}
        bits = {k: 0.0 for k in orders}
        n = 0
        for seq in seqs:
            before = dict(bits), n
            ids = _as_ids(seq)
            run = _valid_run(ids)
            is_base = run > 0
            n += int(is_base.sum())
            context_len = np.maximum(run - 1, 0)  # bases of context available before t
            codes = {j: _kmer_codes(ids, j) for j in tables}
            for k in orders:
                used = np.minimum(context_len, k)
                for j in range(k + 1):
                    at = is_base & (used == j)
                    if at.any():
                        bits[k] -= float(tables[j][codes[j][at]].sum())
            if per_sequence is not None:
                per_sequence.append(({k: bits[k] - before[0][k] for k in orders}, n - before[1]))
        return bits, n

    def bits_per_base(self, seqs: Iterable, orders: Sequence[int] | None = None) -> dict[int, float]:
        bits, n = self.total_bits(seqs, orders)
        return {k: (b / n if n else float("nan")) for k, b in bits.items()}


def _split_tail(seqs: Sequence, fraction: float) -> tuple[list, list]:
    """(head, tail) of ``seqs`` taken as one run of bases: the tail is the last ``fraction`` of the bases."""
    seqs = [_as_ids(s) for s in seqs]
    total = sum(len(s) for s in seqs)
    keep = total - int(round(total * fraction))
    head, tail, seen = [], [], 0
    for seq in seqs:
        if seen + len(seq) <= keep:
            head.append(seq)
        elif seen >= keep:
            tail.append(seq)
        else:
            head.append(seq[: keep - seen])
            tail.append(seq[keep - seen:])
        seen += len(seq)
    return head, tail


def baseline_report(train_seqs: Sequence, eval_seqs: Sequence, max_order: int = 8, pseudocount: float = 1.0) -> dict:
    """Composition entropy of ``eval_seqs`` and Markov bits per base (fitted on ``train_seqs``) for k <= max_order.

    Returns ``{"composition_entropy", "markov": {k: bpb}, "best_order", "best_markov", "best_markov_se",
    "train_order", "train_markov", "n_bases", "n_windows", "n_train_bases"}``:

    * ``train_order``: the order chosen on the training bases alone (fitted on their first 90 %, scored on the
      last 10 %), the honest choice; ``train_markov`` its bits per base on ``eval_seqs`` (refitted on all);
    * ``best_order``: the order that is best on ``eval_seqs`` itself, which flatters the baseline: the bar a
      model is held to (a conservative comparison);
    * ``best_markov_se``: the standard error of ``best_markov`` over the evaluation sequences (windows).
    """
    from genossm.tasks.metrics import ratio_standard_error

    import logging
    import time

    log = logging.getLogger("genossm.baselines")
    t0 = time.perf_counter()
    train_seqs = [_as_ids(s) for s in train_seqs]
    eval_seqs = [_as_ids(s) for s in eval_seqs]
    n_train = sum(len(s) for s in train_seqs)
    log.info(f"Markov baselines: fitting orders 0-{max_order} on {n_train:,} training bases (twice: the order is "
             f"chosen on the last 10 %), scoring {sum(len(s) for s in eval_seqs):,} bases "
             f"(about {max(1, round(n_train * (max_order + 1) * 6e-8))} s)...")
    head, tail = _split_tail(train_seqs, 0.1)
    tail_bits, tail_n = MarkovBaseline(max_order=max_order, pseudocount=pseudocount).fit(head).total_bits(tail)
    train_order = min(tail_bits, key=lambda k: tail_bits[k]) if tail_n else 0
    model = MarkovBaseline(max_order=max_order, pseudocount=pseudocount).fit(train_seqs)
    per_window: list = []
    bits, n = model.total_bits(eval_seqs, per_sequence=per_window)
    markov = {k: (b / n if n else float("nan")) for k, b in bits.items()}
    best = min(markov, key=lambda k: markov[k]) if n else 0
    se = ratio_standard_error([b[best] for b, _ in per_window], [c for _, c in per_window])
    log.info(f"Markov baselines done in {time.perf_counter() - t0:.1f} s")
    return {
        "composition_entropy": composition_entropy(eval_seqs),
        "markov": markov,
        "best_order": best,
        "best_markov": markov[best],
        "best_markov_se": se,
        "train_order": train_order,
        "train_markov": markov[train_order],
        "n_bases": n,
        "n_windows": len(eval_seqs),
        "n_train_bases": int(sum(int((s < NUM_BASES).sum()) for s in train_seqs)),
    }
