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
from genossm.data.windows import rank_and_world
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


class AlleleWindows:
    """Where one allele is scored. The ref window ``[start, end)`` holds REF at ``ref_offset``; the alt window
    has the same left flank, ALT in place of REF and the right flank up to the ref window's length (shifted
    left when the contig ends first): contig bases ``[alt_start, allele start)``, ALT, then
    ``[allele end, alt_end)``, with ALT at ``alt_offset``."""

    def __init__(self, allele: Allele, window_len: int, indel_flank: int, contig_len: int, fetch):
        ref_len, alt_len = len(allele.ref), len(allele.alt)
        self.allele, self._fetch = allele, fetch
        self.start, self.end = place_window(allele.start + ref_len // 2, window_len, contig_len)
        self.ref_offset = allele.start - self.start
        if self.ref_offset < 0 or self.ref_offset + ref_len > self.end - self.start:
            # check_alleles(window_len=...) gives such alleles allele_exceeds_window before they get here
            raise RuntimeError(f"{allele.chrom}:{allele.pos}: REF does not fit in the {window_len}-base window")
        self.ref = fetch(allele.contig, self.start, self.end)
        allele_end = allele.start + ref_len
        alt_end = allele_end + (self.end - self.start) - self.ref_offset - alt_len
        alt_end = max(alt_end, allele_end + min(indel_flank, contig_len - allele_end))  # room for the flank
        self.alt_start = self.start
        if alt_end > contig_len:
            self.alt_start = max(0, self.start - (alt_end - contig_len))
            alt_end = contig_len
        self.alt_end = alt_end
        self.alt_offset = allele.start - self.alt_start
        self.ref_key = ("w", allele.contig, self.start, self.end)  # keys of the distinct sequences of a batch
        self.alt_key = ("alt", allele.contig, self.alt_start, self.alt_end, allele.start, allele.ref, allele.alt)
        self._alt = None

    @property
    def alt(self) -> np.ndarray:
        """The alt window's tokens (built when first needed: an SNV of a masked LM has no use for it)."""
        if self._alt is None:
            a = self.allele
            left = (self._fetch(a.contig, self.alt_start, a.start) if self.alt_start < self.start
                    else self.ref[: a.start - self.start])
            right = self._fetch(a.contig, a.start + len(a.ref), self.alt_end)
            self._alt = np.concatenate([left, tokenizer.encode(a.alt), right])
        return self._alt


class Strand(NamedTuple):
    """Reading a window on the forward strand (``reverse`` False) or as its reverse complement."""

    reverse: bool

    def orient(self, seq: np.ndarray) -> np.ndarray:
        return tokenizer.reverse_complement(seq) if self.reverse else seq

    def position(self, i: int, length: int) -> int:
        """Where position ``i`` of a forward window of ``length`` lands on this strand."""
        return length - 1 - i if self.reverse else i

    def base(self, b) -> int:
        """Base id ``b`` as read on this strand (the complement of A, C, G, T is 3 - b)."""
        return 3 - int(b) if self.reverse else int(b)


def masked(seq: np.ndarray, i: int) -> np.ndarray:
    out = seq.copy()
    out[i] = tokenizer.MASK
    return out


class SequenceSet:
    """The distinct sequences of a batch, each stored once: :meth:`add` gives the row of a key's sequence,
    making it only the first time the key is seen."""

    def __init__(self):
        self.seqs: list[np.ndarray] = []
        self._rows: dict[tuple, int] = {}

    def add(self, key: tuple, make: Callable[[], np.ndarray]) -> int:
        row = self._rows.get(key)
        if row is None:
            row = self._rows[key] = len(self.seqs)
            self.seqs.append(make())
        return row


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
        scored, embedded = SequenceSet(), SequenceSet()
        terms: list[Term] = []
        n = len(alleles)
        emb_ref = np.zeros((n, self.emb_strands), dtype=np.int64)
        emb_alt = np.zeros((n, self.emb_strands), dtype=np.int64)
        emb_ok = np.zeros(n, dtype=bool)
        fetched: dict[tuple, np.ndarray] = {}

        def fetch(contig: str, start: int, end: int) -> np.ndarray:  # each window read once per batch
            key = (contig, start, end)
            if key not in fetched:
                fetched[key] = self.fetch(contig, start, end)
            return fetched[key]

        for row, allele in enumerate(alleles):
            if allele.reason is not None:
                continue
            win = AlleleWindows(allele, self.window_len, self.indel_flank, self.lengths[allele.contig], fetch)
            for s in range(self.strands):
                strand, owner = Strand(bool(s)), 2 * row + s
                if self.causal:
                    terms += self._causal_terms(win, strand, s, owner, scored)
                elif allele.kind == "snv":
                    terms += self._snv_terms(win, strand, s, owner, scored)
                else:
                    terms += self._pll_terms(win, strand, s, owner, scored)
            if self.emb_dist:
                for s in range(self.emb_strands):
                    strand = Strand(bool(s))
                    emb_ref[row, s] = embedded.add(win.ref_key + (s,), lambda strand=strand: strand.orient(win.ref))
                    emb_alt[row, s] = embedded.add(win.alt_key + ("w", s), lambda strand=strand: strand.orient(win.alt))
                emb_ok[row] = True

        return {
            "index": torch.tensor([a.index for a in alleles], dtype=torch.long),
            "reason": torch.tensor([REASON_CODES.index(a.reason or "") for a in alleles], dtype=torch.long),
            "logit_groups": _group(scored.seqs, terms),
            "emb_groups": _group(embedded.seqs, None),
            "emb_ref": torch.from_numpy(emb_ref),
            "emb_alt": torch.from_numpy(emb_alt),
            "emb_ok": torch.from_numpy(emb_ok),
        }

    @staticmethod
    def _causal_terms(win: AlleleWindows, strand: Strand, s: int, owner: int, scored: SequenceSet) -> list[Term]:
        """A causal model: the whole-window log-likelihood of the alt window minus that of the ref window."""
        ref = scored.add(win.ref_key + (s,), lambda: strand.orient(win.ref))
        alt = scored.add(win.alt_key + ("w", s), lambda: strand.orient(win.alt))
        return [Term(ref, WHOLE_WINDOW, -1, -1.0, owner), Term(alt, WHOLE_WINDOW, -1, 1.0, owner)]

    @staticmethod
    def _snv_terms(win: AlleleWindows, strand: Strand, s: int, owner: int, scored: SequenceSet) -> list[Term]:
        """An SNV, masked LM: log P(alt) - log P(ref) at the masked position of the ref window."""
        a, offset = win.allele, win.ref_offset
        row = scored.add(("m", a.contig, win.start, win.end, offset, s), lambda: strand.orient(masked(win.ref, offset)))
        pos = strand.position(offset, win.end - win.start)
        return [Term(row, pos, strand.base(tokenizer.encode(a.alt)[0]), 1.0, owner),
                Term(row, pos, strand.base(tokenizer.encode(a.ref)[0]), -1.0, owner)]

    def _pll_terms(self, win: AlleleWindows, strand: Strand, s: int, owner: int, scored: SequenceSet) -> list[Term]:
        """An indel or MNV, masked LM: the pseudo-log-likelihood over the allele plus the same number of flank
        bases in both windows, each position masked in turn."""
        a = win.allele
        left = min(self.indel_flank, win.ref_offset, win.alt_offset)
        right = min(self.indel_flank, (win.end - win.start) - win.ref_offset - len(a.ref),
                    len(win.alt) - win.alt_offset - len(a.alt))
        terms = []
        for seq, offset, allele_len, coef, tag in (
                (win.ref, win.ref_offset, len(a.ref), -1.0, ("m", a.contig, win.start, win.end)),
                (win.alt, win.alt_offset, len(a.alt), 1.0, win.alt_key + ("m",))):
            for i in range(offset - left, offset + allele_len + right):
                b = int(seq[i])
                if b >= tokenizer.NUM_BASES:
                    continue  # N in a flank: nothing to predict (and the same in both windows)
                row = scored.add(tag + (i, s), lambda seq=seq, i=i: strand.orient(masked(seq, i)))
                terms.append(Term(row, strand.position(i, len(seq)), strand.base(b), coef, owner))
        return terms


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
        raise GenossmError(f"saturation mutagenesis (scan=saturation) needs region=CHR:START-END, got {region!r}")
    if end - start > MAX_SATURATION:
        raise GenossmError(f"region {region} spans {end - start:,} bases; saturation mutagenesis takes at most {MAX_SATURATION:,}")
    name = genome.resolve(contig)
    if end > genome.all_lengths[name]:
        raise GenossmError(f"region {region} ends past the end of {name} ({genome.all_lengths[name]:,} bases) in {genome.path}")
    seq = genome.fetch(name, start, end).upper()
    for i, ref in enumerate(seq):
        alts = tuple(b for b in "ACGT" if b != ref) if ref in "ACGT" else ("A", "C", "G", "T")
        yield VariantRecord(index=i, line=None, chrom=contig, pos=start + i + 1, id=None, ref=ref, alts=alts)


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

        rank, world = rank_and_world()
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
