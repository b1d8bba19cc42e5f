"""The windows a variant is scored in, and the batches of model inputs built from them (in the data loader).

For every allele: the ref window of ``window_len`` bases centred on REF (shifted to stay inside the contig),
the alt window (same left flank, ALT in place of REF, right flank up to the same length), and the positions
whose log-probabilities make its score. A batch holds each distinct sequence once (multi-allelic SNVs and
saturation mutagenesis share one masked window per position) plus named index tensors saying which
log-probability of which sequence counts, with which sign, towards which allele and strand; the scorer
(:class:`genossm.tasks.variants.VariantScorer`) only runs the model and adds them up.
"""

from __future__ import annotations

from typing import Callable, Iterator, NamedTuple

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from genossm.data import tokenizer
from genossm.data.variants import REASON_CODES, Allele, AlleleNumbering, VariantRecord, check_alleles, parse_region
from genossm.errors import GenossmError

MAX_SATURATION = 10_000
WHOLE_WINDOW = -1  # a term's position: the whole-window log-likelihood of a causal model


class Term(NamedTuple):
    """``coef * (log P(base at pos of sequence seq) + log 4)`` is added to the score of ``owner`` (= 2 * allele
    + strand); ``pos = WHOLE_WINDOW`` means the whole-window log-likelihood of a causal model."""

    seq: int
    pos: int
    base: int
    coef: float
    owner: int


def place_window(center: int, window_len: int, contig_len: int) -> tuple[int, int]:
    """``[start, end)`` of ``window_len`` bases with ``center`` at offset ``window_len // 2``, shifted to stay
    inside ``[0, contig_len)``; the whole contig when it is shorter than the window."""
    if contig_len <= window_len:
        return 0, contig_len
    start = min(max(center - window_len // 2, 0), contig_len - window_len)
    return start, start + window_len


class BatchBuilder:
    """Turns up to ``batch_size`` alleles into model inputs and index tensors (CPU, in the data loader).

    Each distinct sequence is run once per batch (multi-allelic SNVs and saturation mutagenesis share one
    masked window per position); each :class:`Term` says which of its log-probabilities counts towards which
    allele and strand. ``strands`` (1 or 2) are scored, ``emb_strands`` embedded (2: both strands averaged).
    """

    def __init__(self, fetch: Callable[[str, int, int], np.ndarray], lengths: dict[str, int], *, window_len: int,
                 indel_flank: int, emb_dist: bool, causal: bool, strands: int, emb_strands: int):
        self.fetch = fetch
        self.lengths = lengths
        self.window_len = int(window_len)
        self.indel_flank = int(indel_flank)
        self.emb_dist = bool(emb_dist)
        self.causal = causal
        self.strands = strands
        self.emb_strands = emb_strands

    def build(self, alleles: list[Allele]) -> dict:
        seqs: list[np.ndarray] = []
        seq_ids: dict[tuple, int] = {}
        emb_seqs: list[np.ndarray] = []
        emb_ids: dict[tuple, int] = {}
        terms: list[Term] = []
        n = len(alleles)
        emb_ref = np.zeros((n, self.emb_strands), dtype=np.int64)
        emb_alt = np.zeros((n, self.emb_strands), dtype=np.int64)
        emb_ok = np.zeros(n, dtype=bool)
        fetched: dict[tuple, np.ndarray] = {}

        def window(contig, start, end):
            key = (contig, start, end)
            if key not in fetched:
                fetched[key] = self.fetch(contig, start, end)
            return fetched[key]

        def add(store, ids, key, make):
            i = ids.get(key)
            if i is None:
                i = ids[key] = len(store)
                store.append(make())
            return i

        for j, a in enumerate(alleles):
            if a.reason is not None:
                continue
            contig_len = self.lengths[a.contig]
            lr, la = len(a.ref), len(a.alt)
            start, end = place_window(a.start + lr // 2, self.window_len, contig_len)
            ref_win = window(a.contig, start, end)
            p = a.start - start  # REF offset in the ref window
            if p < 0 or p + lr > end - start:  # check_alleles(window_len=...) keeps such alleles out
                raise RuntimeError(f"{a.chrom}:{a.pos}: REF does not fit in the {self.window_len}-base window")
            # the alt window: same left flank, ALT, right flank up to the ref window's length (shifted left
            # when the contig ends first)
            alt_start = start
            right_end = a.start + lr + (end - start) - p - la
            right_end = max(right_end, a.start + lr + min(self.indel_flank, contig_len - a.start - lr))
            if right_end > contig_len:
                alt_start = max(0, start - (right_end - contig_len))
                right_end = contig_len
            alt_key = ("alt", a.contig, alt_start, right_end, a.start, a.ref, a.alt)

            def make_alt(alt_start=alt_start, right_end=right_end, a=a, lr=lr):
                left = window(a.contig, alt_start, a.start) if alt_start < start else ref_win[: a.start - start]
                right = window(a.contig, a.start + lr, right_end)
                return np.concatenate([left, tokenizer.encode(a.alt), right])

            alt_win = None
            pa = a.start - alt_start  # ALT offset in the alt window

            for s in range(self.strands):
                owner = 2 * j + s

                def oriented(seq, s=s):
                    return tokenizer.reverse_complement(seq) if s else seq

                def at(i, length, s=s):
                    return length - 1 - i if s else i

                def base(b, s=s):
                    return 3 - int(b) if s else int(b)

                if self.causal:
                    if alt_win is None:
                        alt_win = make_alt()
                    r = add(seqs, seq_ids, ("w", a.contig, start, end, s), lambda s=s: oriented(ref_win))
                    t = add(seqs, seq_ids, alt_key + ("w", s), lambda s=s: oriented(alt_win))
                    terms += [Term(r, WHOLE_WINDOW, -1, -1.0, owner), Term(t, WHOLE_WINDOW, -1, 1.0, owner)]
                    continue
                if a.kind == "snv":
                    key = ("m", a.contig, start, end, p, s)

                    def masked(p=p, s=s):
                        m = ref_win.copy()
                        m[p] = tokenizer.MASK
                        return oriented(m)

                    i = add(seqs, seq_ids, key, masked)
                    q = at(p, end - start)
                    terms += [Term(i, q, base(tokenizer.encode(a.alt)[0]), 1.0, owner),
                              Term(i, q, base(tokenizer.encode(a.ref)[0]), -1.0, owner)]
                    continue
                # indel or MNV: PLL over the allele plus the same number of flank bases in both windows
                if alt_win is None:
                    alt_win = make_alt()
                k_left = min(self.indel_flank, p, pa)
                k_right = min(self.indel_flank, (end - start) - p - lr, len(alt_win) - pa - la)
                for win, off, allele_len, coef, tag in ((ref_win, p, lr, -1.0, ("m", a.contig, start, end)),
                                                        (alt_win, pa, la, 1.0, alt_key + ("m",))):
                    for i in range(off - k_left, off + allele_len + k_right):
                        b = int(win[i])
                        if b >= tokenizer.NUM_BASES:
                            continue  # N in a flank: nothing to predict (and the same in both windows)

                        def masked(win=win, i=i, s=s):
                            m = win.copy()
                            m[i] = tokenizer.MASK
                            return oriented(m)

                        sid = add(seqs, seq_ids, tag + (i, s), masked)
                        terms.append(Term(sid, at(i, len(win)), base(b), coef, owner))
            if self.emb_dist:
                if alt_win is None:
                    alt_win = make_alt()
                for s in range(self.emb_strands):
                    def oriented(seq, s=s):
                        return tokenizer.reverse_complement(seq) if s else seq

                    emb_ref[j, s] = add(emb_seqs, emb_ids, ("w", a.contig, start, end, s), lambda s=s: oriented(ref_win))
                    emb_alt[j, s] = add(emb_seqs, emb_ids, alt_key + ("w", s), lambda s=s: oriented(alt_win))
                emb_ok[j] = True

        batch = {
            "index": torch.tensor([a.index for a in alleles], dtype=torch.long),
            "reason": torch.tensor([REASON_CODES.index(a.reason or "") for a in alleles], dtype=torch.long),
            "logit_groups": _group(seqs, terms),
            "emb_groups": _group(emb_seqs, None),
            "emb_ref": torch.from_numpy(emb_ref),
            "emb_alt": torch.from_numpy(emb_alt),
            "emb_ok": torch.from_numpy(emb_ok),
        }
        return batch


def _group(seqs: list[np.ndarray], terms: list[Term] | None) -> list[dict]:
    """Sequences grouped by length into (n, L) token tensors; the terms of each group in local rows."""
    by_len: dict[int, list[int]] = {}
    for i, s in enumerate(seqs):
        by_len.setdefault(len(s), []).append(i)
    groups = []
    term_arr = np.asarray(terms, dtype=np.float64).reshape(-1, len(Term._fields)) if terms is not None else None
    for length, ids in by_len.items():
        g = {
            "tokens": torch.from_numpy(np.stack([seqs[i] for i in ids]).astype(np.int64)),
            "ids": torch.tensor(ids, dtype=torch.long),
        }
        if term_arr is not None:
            local = np.full(len(seqs), -1, dtype=np.int64)
            local[ids] = np.arange(len(ids))
            rows = local[term_arr[:, 0].astype(np.int64)] if len(term_arr) else np.zeros(0, np.int64)
            sel = rows >= 0
            g["term_row"] = torch.from_numpy(rows[sel])
            g["term_pos"] = torch.from_numpy(term_arr[sel, 1].astype(np.int64))
            g["term_base"] = torch.from_numpy(term_arr[sel, 2].astype(np.int64))
            g["term_coef"] = torch.from_numpy(term_arr[sel, 3].astype(np.float64))
            g["term_owner"] = torch.from_numpy(term_arr[sel, 4].astype(np.int64))
        groups.append(g)
    return groups


def saturation_records(genome, region: str) -> Iterator[VariantRecord]:
    """Every position of ``region`` (``CHR:START-END``, 1-based inclusive, at most 10 kb) as one record
    with the three other bases as ALT alleles."""
    contig, start, end = parse_region(region)
    if start is None or end is None:
        raise GenossmError(f"mode=saturation needs region=CHR:START-END, got {region!r}")
    if end - start > MAX_SATURATION:
        raise GenossmError(f"region {region} spans {end - start:,} bases; saturation mutagenesis takes at most {MAX_SATURATION:,}")
    name = genome.resolve(contig)
    if end > genome.all_lengths[name]:
        raise GenossmError(f"region {region} ends past the end of {name} ({genome.all_lengths[name]:,} bases) in {genome.path}")
    seq = genome.fetch(name, start, end).upper()
    for i, ref in enumerate(seq):
        alts = tuple(b for b in "ACGT" if b != ref) if ref in "ACGT" else ("A", "C", "G", "T")
        yield VariantRecord(index=i, line=None, chrom=contig, pos=start + i + 1, id=None, ref=ref, alts=alts)


def _rank_and_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class VariantBatches(IterableDataset):
    """Streams the input once, in order, and yields prepared batches of ``batch_size`` alleles.

    Batch ``b`` is prepared by one (process, loader worker) only: ``b % shards == shard``, so several
    devices and workers split the work while each sees its batches in increasing order.
    """

    def __init__(self, records: Callable[[], Iterator[VariantRecord]], fasta: str, batch_size: int,
                 builder_args: dict, cache_dir: str | None = None):
        self.records = records
        self.fasta = str(fasta)
        self.batch_size = int(batch_size)
        self.builder_args = builder_args
        self.cache_dir = cache_dir
        self.max_pending = 0  # most alleles held at once (the streaming test reads it)

    def _alleles(self) -> Iterator[list[Allele]]:
        numbering = AlleleNumbering()
        pending: list[Allele] = []
        for rec in self.records():
            pending += numbering(rec)
            self.max_pending = max(self.max_pending, len(pending))
            while len(pending) >= self.batch_size:
                yield pending[: self.batch_size]
                pending = pending[self.batch_size:]
        if pending:
            yield pending

    def __iter__(self):
        from genossm.data.genome import Genome

        rank, world = _rank_and_world()
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info else (1, 0)
        shards, shard = world * workers, rank * workers + worker
        genome = Genome(self.fasta, cache_dir=self.cache_dir)

        def fetch(contig, start, end):
            return tokenizer.encode(genome.fetch(contig, start, end).encode("ascii", errors="replace"))

        builder = BatchBuilder(fetch, genome.all_lengths, **self.builder_args)
        for b, alleles in enumerate(self._alleles()):
            if b % shards != shard:
                continue
            check_alleles(alleles, genome, builder.window_len, builder.indel_flank)
            yield builder.build(alleles)
