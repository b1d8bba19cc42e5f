"""Variant effect scores from a pretrained genossm model, streamed through Lightning's predict loop.

Scores (natural log; every score is "alt minus ref", so **negative = alt less likely than ref**):

* **SNV, masked LM** (``llr``): in a window of ``window_len`` bases centred on the variant, the variant
  position is replaced by ``<mask>`` and ``log P(alt) - log P(ref)`` is read from the model's logits there.
* **indel / MNV, masked LM** (``llr``): a pseudo-log-likelihood (PLL) difference. The ref window is centred
  on REF; the alt window has the same left flank, ALT in place of REF and the right flank filled up to the
  same length. The scored span is the allele plus ``indel_flank`` bases on each side (fewer at a window
  edge, the same number in both windows). PLL = sum over the span of ``log P(base | rest) + log 4`` with
  each span position masked in turn (one forward pass each); ``+ log 4`` per scored base makes a base the
  model cannot predict count 0, so an insertion is not penalised merely for adding bases. ``llr = PLL(alt)
  - PLL(ref)``. For an SNV the same formula gives exactly the masked-position LLR above.
* **causal (next-base) models** (``llr``): the same difference with the exact log-likelihood of the whole
  window, ``sum_t log P(x_t+1 | x_<=t) + log 4``, for SNVs and indels alike.
* **strands**: each score is averaged over the forward strand and the reverse complement (``strands:
  both``). With an RC-equivariant model the two are equal, so ``strands: auto`` reads only the forward one.
* **embedding distance** (``emb_dist``): distance (cosine by default) between the mean-pooled embeddings of
  the unmasked ref and alt windows; embeddings are RC-invariant (an RC-equivariant model's own pooling,
  or the average over both strands otherwise).

Alleles that cannot be scored keep an empty score and a reason (:data:`genossm.data.variants.REASONS`).
Windows near a contig edge are shifted to stay inside the contig (the variant is then off-centre);
a contig shorter than the window is used whole.
"""

from __future__ import annotations

import heapq
import logging
import math
import os
import shutil
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import lightning as L
import numpy as np
import pysam
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, Callback
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from genossm.data import tokenizer
from genossm.data.variants import (
    REASON_CODES,
    Allele,
    TableOutput,
    VariantReader,
    VariantRecord,
    VcfOutput,
    check_alleles,
    is_table_path,
    is_vcf_path,
    parse_region,
    record_alleles,
)
from genossm.errors import GenossmError, atomic_path

log = logging.getLogger(__name__)

LOG4 = math.log(4.0)
MAX_WINDOW = 1 << 20
MAX_SATURATION = 10_000
DEFAULT_WINDOW = 2048
STRAND_OPTIONS = ("auto", "both", "forward")
DISTANCES = ("cosine", "euclidean")


# --------------------------------------------------------------------------------------------------
# windows


def place_window(center: int, window_len: int, contig_len: int) -> tuple[int, int]:
    """``[start, end)`` of ``window_len`` bases with ``center`` at offset ``window_len // 2``, shifted to stay
    inside ``[0, contig_len)``; the whole contig when it is shorter than the window."""
    if contig_len <= window_len:
        return 0, contig_len
    start = min(max(center - window_len // 2, 0), contig_len - window_len)
    return start, start + window_len


def default_window_len(pretrained: str | os.PathLike | None) -> int:
    """The model's training window (``extra["train_window_len"]``) or 2048, whichever is smaller."""
    train_len = None
    if pretrained is not None:
        from genossm.models import load_extra

        train_len = load_extra(pretrained).get("train_window_len")
    return min(int(train_len), DEFAULT_WINDOW) if train_len else DEFAULT_WINDOW


@dataclass
class ScoringOptions:
    window_len: int = DEFAULT_WINDOW
    strands: str = "auto"  # auto | both | forward
    indel_flank: int = 8
    emb_dist: bool = True  # compute the embedding distance
    distance: str = "cosine"  # cosine | euclidean
    pooling: str = "mean"  # mean | center
    keep_embeddings: bool = False  # return the ref/alt embeddings too
    tokens_per_forward: int = 1 << 18  # rows per model call = max(1, tokens_per_forward // window length)
    chunk_len: int | None = None  # the model's long-sequence chunked inference, for very long windows

    def check(self) -> None:
        if not 8 <= int(self.window_len) <= MAX_WINDOW:
            raise GenossmError(f"window_len must be between 8 and {MAX_WINDOW:,} bases, got {self.window_len}")
        if self.strands not in STRAND_OPTIONS:
            raise GenossmError(f"strands must be one of {STRAND_OPTIONS}, got {self.strands!r}")
        if self.distance not in DISTANCES:
            raise GenossmError(f"distance must be one of {DISTANCES}, got {self.distance!r}")
        if self.pooling not in ("mean", "center"):
            raise GenossmError(f"pooling must be mean or center, got {self.pooling!r}")
        if self.indel_flank < 0:
            raise GenossmError(f"indel_flank must be >= 0, got {self.indel_flank}")


# --------------------------------------------------------------------------------------------------
# building a batch: which sequences go through the model, and which of their log-probs make each score


class BatchBuilder:
    """Turns up to ``batch_size`` alleles into model inputs and index tensors (CPU, in the data loader).

    Each distinct sequence is run once per batch (multi-allelic SNVs and saturation mutagenesis share one
    masked window per position). A *term* is ``coef * (log P(base at pos of seq) + log 4)`` added to the
    score of one (allele, strand); ``pos = -1`` means the whole-window log-likelihood of a causal model.
    """

    def __init__(self, fetch: Callable[[str, int, int], np.ndarray], lengths: dict[str, int], opts: ScoringOptions,
                 causal: bool, strands: int, emb_strands: int):
        self.fetch = fetch
        self.lengths = lengths
        self.opts = opts
        self.causal = causal
        self.strands = strands
        self.emb_strands = emb_strands

    def build(self, alleles: list[Allele]) -> dict:
        seqs: list[np.ndarray] = []
        seq_ids: dict[tuple, int] = {}
        emb_seqs: list[np.ndarray] = []
        emb_ids: dict[tuple, int] = {}
        terms: list[tuple[int, int, int, float, int]] = []  # seq, pos, base, coef, owner
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
            start, end = place_window(a.start + lr // 2, self.opts.window_len, contig_len)
            ref_win = window(a.contig, start, end)
            p = a.start - start  # REF offset in the ref window
            # the alt window: same left flank, ALT, right flank up to the ref window's length (shifted left
            # when the contig ends first)
            alt_start = start
            right_end = a.start + lr + (end - start) - p - la
            right_end = max(right_end, a.start + lr + min(self.opts.indel_flank, contig_len - a.start - lr))
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
                    terms += [(r, -1, -1, -1.0, owner), (t, -1, -1, 1.0, owner)]
                    continue
                if a.kind == "snv":
                    key = ("m", a.contig, start, end, p, s)

                    def masked(p=p, s=s):
                        m = ref_win.copy()
                        m[p] = tokenizer.MASK
                        return oriented(m)

                    i = add(seqs, seq_ids, key, masked)
                    q = at(p, end - start)
                    terms += [(i, q, base(tokenizer.encode(a.alt)[0]), 1.0, owner),
                              (i, q, base(tokenizer.encode(a.ref)[0]), -1.0, owner)]
                    continue
                # indel or MNV: PLL over the allele plus the same number of flank bases in both windows
                if alt_win is None:
                    alt_win = make_alt()
                k_left = min(self.opts.indel_flank, p, pa)
                k_right = min(self.opts.indel_flank, (end - start) - p - lr, len(alt_win) - pa - la)
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
                        terms.append((sid, at(i, len(win)), base(b), coef, owner))
            if self.opts.emb_dist:
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


def _group(seqs: list[np.ndarray], terms) -> list[dict]:
    """Sequences grouped by length into (n, L) token tensors; the terms of each group in local rows."""
    by_len: dict[int, list[int]] = {}
    for i, s in enumerate(seqs):
        by_len.setdefault(len(s), []).append(i)
    groups = []
    term_arr = np.asarray(terms, dtype=np.float64).reshape(-1, 5) if terms is not None else None
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


# --------------------------------------------------------------------------------------------------
# input stream


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
        index = 0
        pending: list[Allele] = []
        for rec in self.records():
            alleles = record_alleles(rec, index)
            index += len(alleles)
            pending += alleles
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
            check_alleles(alleles, genome)
            yield builder.build(alleles)


# --------------------------------------------------------------------------------------------------
# the model side


class VariantScorer(L.LightningModule):
    """Wraps a pretrained :class:`~genossm.models.BiMambaLM`; ``predict_step`` turns a prepared batch into
    one ``llr`` / ``emb_dist`` per allele (NaN where it has no score)."""

    def __init__(self, model, opts: ScoringOptions):
        super().__init__()
        self.model = model.eval()
        self.opts = opts

    def _chunks(self, tokens: torch.Tensor):
        rows = max(1, self.opts.tokens_per_forward // max(tokens.shape[1], 1))
        for i in range(0, tokens.shape[0], rows):
            yield i, tokens[i : i + rows]

    def _logp(self, tokens: torch.Tensor) -> torch.Tensor:
        logits = self.model(tokens, chunk_len=self.opts.chunk_len) if self.opts.chunk_len else self.model(tokens)
        return torch.log_softmax(logits.float(), dim=-1)

    @torch.no_grad()
    def predict_step(self, batch: dict, batch_idx: int = 0, dataloader_idx: int = 0) -> dict:
        n = batch["index"].shape[0]
        device = batch["index"].device
        strand_sum = torch.zeros(2 * n, dtype=torch.float64, device=device)
        strand_has = torch.zeros(2 * n, dtype=torch.bool, device=device)
        for g in batch["logit_groups"]:
            tokens = g["tokens"]
            values = torch.zeros(g["term_row"].shape[0], dtype=torch.float64, device=device)
            for i0, chunk in self._chunks(tokens):
                sel = (g["term_row"] >= i0) & (g["term_row"] < i0 + chunk.shape[0])
                if not bool(sel.any()):
                    continue
                logp = self._logp(chunk)  # (rows, L, 4)
                rows, pos, base = g["term_row"][sel] - i0, g["term_pos"][sel], g["term_base"][sel]
                whole = pos < 0
                v = torch.zeros(rows.shape[0], dtype=torch.float64, device=device)
                if bool((~whole).any()):
                    v[~whole] = logp[rows[~whole], pos[~whole], base[~whole]].double() + LOG4
                if bool(whole.any()):
                    nxt = chunk[:, 1:]
                    ok = nxt < tokenizer.NUM_BASES
                    lp = logp[:, :-1].gather(-1, nxt.clamp(max=3).unsqueeze(-1)).squeeze(-1).double() + LOG4
                    seq_ll = (lp * ok).sum(-1)
                    v[whole] = seq_ll[rows[whole]]
                values[sel] = v
            strand_sum.index_add_(0, g["term_owner"], g["term_coef"].to(values.dtype) * values)
            strand_has[g["term_owner"]] = True
        strand_sum, strand_has = strand_sum.view(n, 2), strand_has.view(n, 2)
        n_strands = strand_has.sum(1)
        llr = torch.where(n_strands > 0, (strand_sum * strand_has).sum(1) / n_strands.clamp(min=1),
                          torch.full_like(n_strands, float("nan"), dtype=torch.float64))
        out = {"index": batch["index"], "reason": batch["reason"], "llr": llr}

        emb_dist = torch.full((n,), float("nan"), dtype=torch.float64, device=device)
        if self.opts.emb_dist and batch["emb_groups"]:
            n_emb = sum(g["ids"].shape[0] for g in batch["emb_groups"])
            emb = None
            for g in batch["emb_groups"]:
                for i0, chunk in self._chunks(g["tokens"]):
                    e = self.model.embed(chunk, pooling=self.opts.pooling, chunk_len=self.opts.chunk_len).float()
                    if emb is None:
                        emb = torch.zeros(n_emb, e.shape[-1], device=device)
                    emb[g["ids"][i0 : i0 + chunk.shape[0]]] = e
            ok = batch["emb_ok"]
            e_ref = emb[batch["emb_ref"]].mean(1)  # (n, H): average over strands -> RC-invariant
            e_alt = emb[batch["emb_alt"]].mean(1)
            if self.opts.distance == "cosine":
                d = 1.0 - torch.nn.functional.cosine_similarity(e_ref.double(), e_alt.double(), dim=-1, eps=1e-12)
            else:
                d = (e_ref.double() - e_alt.double()).norm(dim=-1)
            emb_dist = torch.where(ok, d, emb_dist)
            if self.opts.keep_embeddings:
                nan = torch.full_like(e_ref, float("nan"))
                out["emb_ref"] = torch.where(ok[:, None], e_ref, nan)
                out["emb_alt"] = torch.where(ok[:, None], e_alt, nan)
        out["emb_dist"] = emb_dist
        return out


# --------------------------------------------------------------------------------------------------
# writing: per-device shards during prediction, then one pass that merges them in input order

SHARD_DTYPE = np.dtype([("index", "<i8"), ("llr", "<f8"), ("emb_dist", "<f8"), ("reason", "<i2")])


class ShardWriter(BasePredictionWriter):
    """Appends each batch's scores to this process's shard file as soon as it is predicted (nothing is
    accumulated in memory); :func:`merged_scores` later reads every shard back in input order."""

    def __init__(self, folder: str | os.PathLike, keep_embeddings: bool = False):
        super().__init__(write_interval="batch")
        self.folder = Path(folder)
        self.keep_embeddings = keep_embeddings
        self._files: dict[str, object] = {}
        self.n_written = 0

    def setup(self, trainer, pl_module, stage: str) -> None:
        # once every rank has joined: rank 0 clears what an interrupted run left, before anyone writes
        if trainer.is_global_zero and self.folder.exists():
            shutil.rmtree(self.folder)
        trainer.strategy.barrier("genossm-shards-cleared")

    def _file(self, name: str, rank: int):
        key = f"{name}.rank{rank:04d}.bin"
        if key not in self._files:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._files[key] = open(self.folder / key, "wb")
        return self._files[key]

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        rows = np.zeros(prediction["index"].shape[0], dtype=SHARD_DTYPE)
        rows["index"] = prediction["index"].cpu().numpy()
        rows["llr"] = prediction["llr"].cpu().numpy()
        rows["emb_dist"] = prediction["emb_dist"].cpu().numpy()
        rows["reason"] = prediction["reason"].cpu().numpy()
        rows.tofile(self._file("scores", trainer.global_rank))
        if self.keep_embeddings and "emb_ref" in prediction:
            both = torch.stack([prediction["emb_ref"], prediction["emb_alt"]], dim=1).float().cpu().numpy()
            both.tofile(self._file("embeddings", trainer.global_rank))
        self.n_written += len(rows)

    def close(self) -> None:
        for fh in self._files.values():
            fh.close()
        self._files = {}

    def on_predict_end(self, trainer, pl_module):
        self.close()


class VariantProgress(Callback):
    """A progress bar counting variant alleles (with alleles/s), instead of Lightning's batches."""

    def __init__(self, total: int | None = None, enabled: bool = True):
        self.total = total
        self.enabled = enabled
        self.bar = None

    def on_predict_start(self, trainer, pl_module):
        if self.enabled and trainer.is_global_zero:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, unit=" variants", unit_scale=True, desc="scoring", dynamic_ncols=True)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if self.bar is not None:
            self.bar.update(int(batch["index"].shape[0]) * trainer.world_size)

    def on_predict_end(self, trainer, pl_module):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def merged_scores(folder: str | os.PathLike, chunk: int = 65536) -> Iterator[np.void]:
    """Every shard's rows, merged by allele index (each shard is already in increasing order)."""
    files = sorted(Path(folder).glob("scores.rank*.bin"))

    def rows(path):
        data = np.memmap(path, dtype=SHARD_DTYPE, mode="r") if path.stat().st_size else np.zeros(0, SHARD_DTYPE)
        for i in range(0, len(data), chunk):
            yield from np.array(data[i : i + chunk])

    expected = 0
    for row in heapq.merge(*(rows(p) for p in files), key=lambda r: int(r["index"])):
        if int(row["index"]) != expected:
            raise RuntimeError(f"score shards in {folder} are missing allele {expected} (found {int(row['index'])})")
        expected += 1
        yield row


def merged_embeddings(folder: str | os.PathLike, dim: int) -> Iterator[np.ndarray]:
    """The embedding rows ``(2, dim)`` in allele order, aligned with :func:`merged_scores`."""
    folder = Path(folder)
    streams = []
    for path in sorted(folder.glob("scores.rank*.bin")):
        emb_path = folder / path.name.replace("scores", "embeddings")
        idx = np.memmap(path, dtype=SHARD_DTYPE, mode="r")["index"] if path.stat().st_size else np.zeros(0, np.int64)
        emb = (np.memmap(emb_path, dtype=np.float32, mode="r").reshape(-1, 2, dim)
               if emb_path.exists() and emb_path.stat().st_size else np.zeros((0, 2, dim), np.float32))
        streams.append(((int(i), k, emb) for k, i in enumerate(idx)))
    for _, k, emb in heapq.merge(*streams, key=lambda t: t[0]):
        yield np.asarray(emb[k])


# --------------------------------------------------------------------------------------------------
# the whole run


@dataclass
class Summary:
    records: int = 0
    alleles: int = 0
    scored: Counter = field(default_factory=Counter)  # kind -> n
    skipped: Counter = field(default_factory=Counter)  # reason -> n
    seconds: float = 0.0

    def text(self) -> str:
        scored = sum(self.scored.values())
        lines = [f"{self.records:,} records, {self.alleles:,} alleles: {scored:,} scored"
                 + (f" ({', '.join(f'{k} {v:,}' for k, v in sorted(self.scored.items()))})" if scored else "")
                 + (f" in {self.seconds:.1f} s ({self.alleles / max(self.seconds, 1e-9):,.0f} alleles/s)" if self.seconds else "")]
        for reason, n in sorted(self.skipped.items()):
            lines.append(f"  not scored, {reason}: {n:,}")
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {"records": self.records, "alleles": self.alleles, "scored": dict(self.scored),
                "skipped": dict(self.skipped), "seconds": self.seconds}


def _table_path(output: Path, table: str | None) -> Path | None:
    if table:
        return Path(table)
    if is_table_path(output):
        return output
    name = output.name
    for ext in (".vcf.gz", ".vcf.bgz", ".vcf", ".bcf"):
        if name.lower().endswith(ext):
            return output.with_name(name[: -len(ext)] + ".tsv")
    return output.with_name(name + ".tsv")


def score_variants(
    pretrained: str | os.PathLike,
    fasta: str | os.PathLike,
    output: str | os.PathLike,
    variants: str | os.PathLike | None = None,
    *,
    mode: str = "variants",
    region: str | None = None,
    table: str | os.PathLike | None = None,
    heatmap: str | os.PathLike | None = None,
    embeddings: str | os.PathLike | None = None,
    window_len: int | None = None,
    batch_size: int = 16,
    strands: str = "auto",
    indel_flank: int = 8,
    emb_dist: bool = True,
    distance: str = "cosine",
    pooling: str = "mean",
    tokens_per_forward: int = 1 << 18,
    chunk_len: int | None = None,
    num_workers: int = 0,
    cache_dir: str | None = None,
    trainer: dict | L.Trainer | None = None,
    progress: bool = True,
    model=None,
) -> Summary:
    """Score every allele of ``variants`` (or, with ``mode="saturation"``, every substitution in ``region``)
    and write ``output``: a VCF (``.vcf``, ``.vcf.gz``, ``.bcf``) keeping every input record plus a table
    beside it, or only the table (``.tsv``, ``.tsv.gz``, ``.parquet``). Returns the run's :class:`Summary`."""
    from genossm.data.genome import Genome
    from genossm.models import from_pretrained

    started = time.perf_counter()
    if mode not in ("variants", "saturation"):
        raise GenossmError(f"mode must be 'variants' or 'saturation', got {mode!r}")
    if output is None:
        raise GenossmError("output= is required (a .vcf/.vcf.gz/.bcf, .tsv or .parquet path)")
    output = Path(output)
    if not (is_vcf_path(output) or is_table_path(output)):
        raise GenossmError(f"output={output}: name it .vcf, .vcf.gz, .bcf, .tsv, .tsv.gz or .parquet")
    if fasta is None:
        raise GenossmError("fasta= is required (the reference genome the variants are called against)")
    genome = Genome(fasta, cache_dir=cache_dir)
    if mode == "saturation":
        if not region:
            raise GenossmError("mode=saturation needs region=CHR:START-END (at most 10 kb)")
        if is_vcf_path(output):
            raise GenossmError(f"mode=saturation writes a table: name output .tsv or .parquet, not {output.name}")
        list(saturation_records(genome, region))[:0]  # validate the region before loading the model
        records = lambda: saturation_records(genome, region)  # noqa: E731
        reader = None
    else:
        if variants is None:
            raise GenossmError("variants= is required (a VCF, BCF or TSV file)")
        reader = VariantReader(variants, region=region)
        if is_vcf_path(output) and reader.format == "tsv":
            raise GenossmError(f"variants={variants} is a TSV, so the output cannot be a VCF: name output .tsv or .parquet")
        records = lambda: iter(reader)  # noqa: E731

    if model is None:
        if pretrained is None:
            raise GenossmError("pretrained= is required (a folder written by save_pretrained, or a .ckpt)")
        model = from_pretrained(pretrained)
    if window_len is None:
        window_len = default_window_len(pretrained)
    opts = ScoringOptions(window_len=int(window_len), strands=strands, indel_flank=int(indel_flank), emb_dist=emb_dist,
                          distance=distance, pooling=pooling, keep_embeddings=embeddings is not None,
                          tokens_per_forward=int(tokens_per_forward), chunk_len=chunk_len)
    opts.check()
    if embeddings is not None and not emb_dist:
        raise GenossmError("embeddings= needs emb_dist: true")
    cfg = model.config
    n_strands = 1 if strands == "forward" or (strands == "auto" and cfg.rc_equivariant) else 2
    emb_strands = 1 if cfg.rc_equivariant else 2
    dataset = VariantBatches(records, genome.path, batch_size, dict(
        opts=opts, causal=not cfg.bidirectional, strands=n_strands, emb_strands=emb_strands), cache_dir=cache_dir)
    loader = DataLoader(dataset, batch_size=None, num_workers=num_workers)

    parts = output.with_name(f".{output.name}.genossm-parts")
    writer = ShardWriter(parts, keep_embeddings=embeddings is not None)
    callbacks = [writer, VariantProgress(enabled=progress)]
    if isinstance(trainer, L.Trainer):
        trainer.callbacks.extend(callbacks)
        pl_trainer = trainer
    else:
        kwargs = {"accelerator": "cpu", "devices": 1, "logger": False}
        kwargs.update(dict(trainer or {}))
        kwargs.update(callbacks=list(kwargs.get("callbacks") or []) + callbacks, enable_progress_bar=False,
                      enable_checkpointing=False, enable_model_summary=False)
        kwargs.setdefault("logger", False)
        pl_trainer = L.Trainer(**kwargs)
    scorer = VariantScorer(model, opts)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*infer the batch indices.*")
            pl_trainer.predict(scorer, dataloaders=loader, return_predictions=False)
        writer.close()
        pl_trainer.strategy.barrier("genossm-shards-written")  # every rank's shard is complete
        summary = Summary()
        if pl_trainer.is_global_zero:
            summary = _assemble(parts, output, table, reader, records, heatmap, embeddings, model.embed_dim, mode)
            summary.seconds = time.perf_counter() - started
            log.info("%s", summary.text())
    finally:
        writer.close()
        if pl_trainer.is_global_zero and parts.exists():
            shutil.rmtree(parts, ignore_errors=True)
    return summary


def _assemble(parts, output, table, reader, records, heatmap, embeddings, dim, mode) -> Summary:
    """Read the input again, in order, beside the merged scores, and write every output atomically."""
    summary = Summary()
    scores = merged_scores(parts)
    table_path = _table_path(output, table)
    emb_rows = merged_embeddings(parts, dim) if embeddings is not None else None
    heat = [] if mode == "saturation" else None

    def rows_for(rec: VariantRecord) -> list:
        alleles = record_alleles(rec, summary.alleles)
        out = []
        for a in alleles:
            s = next(scores)
            reason = REASON_CODES[int(s["reason"])] or None
            out.append((a, float(s["llr"]), float(s["emb_dist"]), reason))
            summary.alleles += 1
            if reason:
                summary.skipped[reason] += 1
            else:
                summary.scored[a.kind] += 1
        summary.records += 1
        return out

    def table_row(a: Allele, llr, dist, reason) -> dict:
        return {"record": a.record, "chrom": a.chrom, "pos": a.pos, "id": a.id or "", "ref": a.ref, "alt": a.alt,
                "allele": a.allele, "kind": a.kind, "llr": llr, "emb_dist": dist, "reason": reason or ""}

    emb_ctx = _EmbeddingOutput(embeddings, dim) if embeddings is not None else None
    with TableOutput(table_path) as tab:
        if emb_ctx is not None:
            emb_ctx.__enter__()
        try:
            if is_vcf_path(output):
                quiet = pysam.set_verbosity(0)  # htslib already warned about undeclared keys while scoring
                try:
                    reader = reader.rewritten(parts)
                finally:
                    pysam.set_verbosity(quiet)
                with VcfOutput(output, reader.header) as vcf:
                    for rec, prec in reader.pysam_records():
                        rows = rows_for(rec)
                        vcf.write(prec, [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows])
                        for r in rows:
                            tab.add(table_row(*r))
                            if emb_ctx is not None:
                                emb_ctx.add(r[0], next(emb_rows))
            else:
                for rec in records():
                    for r in rows_for(rec):
                        tab.add(table_row(*r))
                        if emb_ctx is not None:
                            emb_ctx.add(r[0], next(emb_rows))
                        if heat is not None:
                            heat.append((r[0].pos, r[0].ref, r[0].alt, r[1]))
            if next(scores, None) is not None:
                raise RuntimeError("more scores than input alleles: the input changed while it was being scored")
        except BaseException:
            if emb_ctx is not None:
                emb_ctx.__exit__(*__import__("sys").exc_info())
            raise
        if emb_ctx is not None:
            emb_ctx.__exit__(None, None, None)
    if heat is not None:
        draw_heatmap(heat, heatmap or table_path.with_suffix(".png"))
    return summary


class _EmbeddingOutput:
    """Ref and alt embeddings per allele: ``.npy`` (float32, shape (alleles, 2, dim), NaN when not scored)
    or ``.parquet`` (one row per allele with ``emb_ref`` and ``emb_alt`` lists)."""

    def __init__(self, path, dim: int):
        self.path = Path(path)
        self.dim = dim
        self.parquet = self.path.suffix.lower() in (".parquet", ".pq")
        if not self.parquet and self.path.suffix.lower() != ".npy":
            raise GenossmError(f"embeddings={self.path}: name it .npy or .parquet")
        self.rows: list = []
        self.meta: list = []
        self._writer = None

    def __enter__(self):
        self._ctx = atomic_path(self.path, self.path.suffix)
        self._tmp = self._ctx.__enter__()
        if not self.parquet:
            self._raw = open(self._tmp.with_suffix(".raw"), "wb")
        return self

    def add(self, allele: Allele, emb: np.ndarray) -> None:
        if self.parquet:
            self.meta.append(allele)
            self.rows.append(emb)
            if len(self.rows) >= 4096:
                self._flush()
        else:
            np.asarray(emb, dtype=np.float32).tofile(self._raw)

    def _flush(self):
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self.rows:
            return
        arr = np.stack(self.rows).astype(np.float32)
        table = pa.table({
            "allele_index": [a.index for a in self.meta], "chrom": [a.chrom for a in self.meta],
            "pos": [a.pos for a in self.meta], "ref": [a.ref for a in self.meta], "alt": [a.alt for a in self.meta],
            "emb_ref": list(arr[:, 0]), "emb_alt": list(arr[:, 1]),
        })
        if self._writer is None:
            self._writer = pq.ParquetWriter(str(self._tmp), table.schema)
        self._writer.write_table(table)
        self.rows, self.meta = [], []

    def __exit__(self, *exc):
        try:
            if self.parquet:
                if exc[0] is None:
                    self._flush()
                if self._writer is not None:
                    self._writer.close()
            else:
                self._raw.close()
                raw_path = Path(self._raw.name)
                if exc[0] is None:
                    data = np.memmap(raw_path, dtype=np.float32, mode="r") if raw_path.stat().st_size else np.zeros(0, np.float32)
                    out = np.lib.format.open_memmap(self._tmp, mode="w+", dtype=np.float32,
                                                    shape=(len(data) // (2 * self.dim), 2, self.dim))
                    out.reshape(-1)[:] = data
                    out.flush()
                    del out
                raw_path.unlink(missing_ok=True)
        finally:
            self._ctx.__exit__(*exc)


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
