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


def fit_chosen_order(train_seqs: Sequence, max_order: int = 8, pseudocount: float = 1.0) -> tuple[MarkovBaseline, int]:
    """The Markov model fitted on ``train_seqs`` and its order, chosen on the training bases alone (fitted on
    their first 90 %, the order with the fewest bits per base on the last 10 %), as ``baseline_report``'s
    ``train_order``: never on what it is then used to score."""
    train_seqs = [_as_ids(s) for s in train_seqs]
    head, tail = _split_tail(train_seqs, 0.1)
    tail_bits, tail_n = MarkovBaseline(max_order=max_order, pseudocount=pseudocount).fit(head).total_bits(tail)
    order = min(tail_bits, key=lambda k: tail_bits[k]) if tail_n else 0
    return MarkovBaseline(max_order=max_order, pseudocount=pseudocount).fit(train_seqs), order


def variant_llr(model: MarkovBaseline, order: int, left, ref, alt, right) -> float:
    """The order-``order`` Markov log-likelihood ratio of one allele, natural log, alt minus ref (negative: alt
    less likely), on the same footing as genossm's own indel score (:mod:`genossm.tasks.variants`).

    ``left`` and ``right`` are the ``order`` reference bases before and after REF (token ids, fewer at a contig
    end). The chain reads each base from the ``order`` bases before it, so replacing REF by ALT changes the
    probability of the allele's own bases and of the ``order`` bases after it, and of nothing else: the score
    is ``sum (log P(base | context) + log 4)`` over ALT and the right flank in the alt sequence, minus the
    same over REF and the right flank in the ref sequence (the ``+ log 4`` per base: a base no better than
    chance counts 0, so an insertion is not penalised only for its length). It is averaged over the forward
    strand and the reverse complement (where the context comes from the other side)."""
    from genossm.data.tokenizer import reverse_complement

    parts = [np.asarray(p, dtype=np.int64) for p in (left, ref, alt, right)]
    left, ref, alt, right = parts
    ref_seq = np.concatenate([left, ref, right])
    alt_seq = np.concatenate([left, alt, right])
    extra = (len(alt) - len(ref)) * math.log(4.0)
    values = []
    for r, a in ((ref_seq, alt_seq), (reverse_complement(ref_seq), reverse_complement(alt_seq))):
        bits_ref = model.total_bits([r], orders=[order])[0][order]
        bits_alt = model.total_bits([a], orders=[order])[0][order]
        # the flanks are scored in both sequences from the same context where the allele does not reach them:
        # those terms cancel, so the difference of the whole sequences is the difference over the changed span
        values.append(-(bits_alt - bits_ref) * LN2 + extra)
    return float(np.mean(values))


def reference_bases(genome, first_contigs: Sequence[str] = (), max_bases: int | None = None,
                    bases_per_read: int = 1 << 20) -> tuple[list[np.ndarray], int]:
    """The A/C/G/T runs of a :class:`~genossm.data.genome.Genome` as token-id arrays, ``first_contigs`` first
    (names or aliases; the rest in file order), at most ``max_bases`` bases: what a Markov model of the reference
    is fitted on. N runs are left out (a bundled slice can be mostly N)."""
    order = []
    for name in list(first_contigs) + list(genome.contig_names):
        try:
            contig = genome.resolve(name)
        except Exception:  # noqa: BLE001 - a contig the FASTA lacks contributes nothing
            continue
        if contig not in order:
            order.append(contig)
    seqs, total = [], 0
    for contig in order:
        length = genome.all_lengths[contig]
        for start in range(0, length, bases_per_read):
            ids = genome.fetch_tokens(contig, start, min(length, start + bases_per_read))[0].astype(np.int64)
            is_base = ids < NUM_BASES
            if not is_base.any():
                continue
            edges = np.flatnonzero(np.diff(np.r_[0, is_base.astype(np.int8), 0]))
            for s, e in zip(edges[::2], edges[1::2]):
                if max_bases is not None and total >= max_bases:
                    return seqs, total
                if max_bases is not None:
                    e = min(e, s + max_bases - total)
                if e - s >= 2:
                    seqs.append(ids[s:e])
                    total += e - s
    return seqs, total


def markov_variant_scores(model: MarkovBaseline, order: int, genome, alleles) -> tuple[np.ndarray, dict]:
    """:func:`variant_llr` of every allele (:class:`~genossm.data.variants.Allele`) against ``genome``; NaN
    where the allele cannot be scored, with the reasons counted (those of ``score-variants``)."""
    import copy
    from collections import Counter

    from genossm.data.tokenizer import encode
    from genossm.data.variants import check_alleles

    checked = check_alleles([copy.copy(a) for a in alleles], genome)
    out = np.full(len(checked), np.nan)
    reasons: Counter = Counter()
    for i, a in enumerate(checked):
        if a.reason is not None:
            reasons[a.reason] += 1
            continue
        length = genome.all_lengths[a.contig]
        end = a.start + len(a.ref)
        left = encode(genome.fetch(a.contig, max(0, a.start - order), a.start).upper())
        right = encode(genome.fetch(a.contig, end, min(length, end + order)).upper())
        out[i] = variant_llr(model, order, left, encode(a.ref), encode(a.alt), right)
    return out, dict(reasons)
