"""Window datasets: what the models read.

Genome windows come from the token cache (:mod:`genossm.data.token_cache`) inside the intervals of a split
(:mod:`genossm.data.intervals`); a window always lies inside one interval, so no window crosses a split
boundary. A window longer than its interval (or contig) is padded with ``<pad>`` and marked ``valid=False``
there.

:class:`RandomWindows` (training) and :class:`TiledWindows` (evaluation) are iterable datasets that yield
whole batches, built with numpy slicing of the memmap (no per-base Python), so one worker serves hundreds of
millions of tokens per second. Each batch is drawn from its own random generator seeded by
``(seed, epoch, rank, batch index)``: a run repeats exactly, whatever the number of workers, and each
DDP rank reads different windows.

Regions come as rows of fixed-length tokens (:class:`RegionDataset`) or as whole sequences batched by length
(:class:`SequenceDataset`, :class:`SameLengthBatches`).
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, Sampler, get_worker_info

from genossm.data import tokenizer
from genossm.data.intervals import Interval
from genossm.data.token_cache import TokenCache
from genossm.errors import GenossmError

# packed byte -> packed byte of the complementary base (soft-mask bit kept)
_PACKED_COMPLEMENT = np.arange(256, dtype=np.uint8)
for _byte in range(256):
    _id = _byte & 0x7F
    if _id < tokenizer.VOCAB_SIZE:
        _PACKED_COMPLEMENT[_byte] = (_byte & 0x80) | int(tokenizer.COMPLEMENT[_id])


# --------------------------------------------------------------------------------------------------
# genome windows


def rank_and_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class _WindowBatches(IterableDataset):
    """Shared machinery: fill a (B, L) packed array from intervals and turn it into a batch dict."""

    def __init__(self, cache: TokenCache, intervals: Sequence[Interval], window_len: int, batch_size: int,
                 seed: int = 0, rc_augment: bool = False, max_n_fraction: float = 1.0,
                 rank: int | None = None, world_size: int | None = None):
        if window_len < 1 or batch_size < 1:
            raise GenossmError(f"window_len and batch_size must be positive, got {window_len} and {batch_size}")
        if not 0.0 <= max_n_fraction <= 1.0:
            raise GenossmError(f"max_n_fraction must be between 0 and 1, got {max_n_fraction}")
        self.cache = cache
        self.intervals = [(c, int(s), int(e)) for c, s, e in intervals if e > s]
        self.window_len = int(window_len)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.rc_augment = bool(rc_augment)
        self.max_n_fraction = float(max_n_fraction)
        if rank is None or world_size is None:
            rank, world_size = rank_and_world()
        self.rank, self.world_size = int(rank), int(world_size)
        self.epoch = 0
        self._iters = 0  # iterations started in this process since ``epoch`` was set

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self._iters = 0

    def _next_epoch(self) -> int:
        epoch = self.epoch + self._iters
        self._iters += 1
        return epoch

    def _my_batches(self, n_batches: int) -> range:
        """Indices of this worker's batches: DataLoader takes batches from workers in turn, so batch order
        is 0, 1, 2, ... whatever the number of workers."""
        info = get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info else (0, 1)
        return range(worker, n_batches, n_workers)

    def _fill(self, packed: np.ndarray, row: int, contig: str, start: int, end: int, rc: bool = False) -> None:
        """Window ``[start, start+L)`` of ``contig`` clipped at ``end``, padded beyond."""
        n = min(self.window_len, end - start)
        packed[row, :n] = self.cache.packed(contig)[start : start + n]
        packed[row, n:] = tokenizer.PAD
        if rc:  # <pad> complements to itself
            np.take(_PACKED_COMPLEMENT, packed[row, ::-1].copy(), out=packed[row])

    def _fill_rows(self, packed: np.ndarray, rows: np.ndarray, k: np.ndarray, starts: np.ndarray) -> None:
        """Rows ``rows`` of ``packed`` from intervals ``k`` at ``starts``: one gather per contig for short windows."""
        L = self.window_len
        ends = self._iv_end[k]
        full = starts + L <= ends
        if L <= 16384:
            offsets = np.arange(L, dtype=np.int64)
            for c in np.unique(self._iv_contig[k[full]]):
                sel = full & (self._iv_contig[k] == c)
                mem = self.cache.packed(self._contigs[c])
                packed[rows[sel]] = mem[starts[sel, None] + offsets]
            loop = np.flatnonzero(~full)
        else:
            loop = np.arange(len(rows))
        for i in loop:
            contig, _, end = self.intervals[int(k[i])]
            self._fill(packed, int(rows[i]), contig, int(starts[i]), end)

    def _index_intervals(self) -> None:
        self._contigs = sorted({c for c, _, _ in self.intervals})
        cid = {c: i for i, c in enumerate(self._contigs)}
        self._iv_contig = np.array([cid[c] for c, _, _ in self.intervals], dtype=np.int64)
        self._iv_start = np.array([s for _, s, _ in self.intervals], dtype=np.int64)
        self._iv_end = np.array([e for _, _, e in self.intervals], dtype=np.int64)

    def _n_bad(self, packed: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """Rows with more than ``max_n_fraction`` N among their real bases."""
        n_real = np.minimum(self.window_len, ends - starts)
        n_count = np.count_nonzero(packed == tokenizer.N, axis=1) + np.count_nonzero(packed == tokenizer.N | 0x80, axis=1)
        return n_count > self.max_n_fraction * n_real

    @staticmethod
    def _to_batch(packed: np.ndarray, contigs: list[str], starts: np.ndarray, rc: np.ndarray) -> dict:
        batch = {
            "packed": torch.from_numpy(packed),
            "contig": contigs,
            "start": torch.from_numpy(starts.astype(np.int64)),
            "rc": torch.from_numpy(rc),
        }
        # a worker process sends one byte per base (8x less than int64 through shared memory);
        # the DataLoader unpacks in the main process (see unpack_batch)
        return batch if get_worker_info() is not None else unpack_batch(batch)


def unpack_batch(batch: dict) -> dict:
    """``{"packed": uint8 (B, L), ...}`` -> ``{"tokens": long, "softmask": bool, "valid": bool, ...}``."""
    if "packed" not in batch:
        return batch
    packed = batch.pop("packed")
    ids = packed & 0x7F
    return {
        "tokens": ids.long(),
        "softmask": packed >= 0x80,
        "valid": ids != tokenizer.PAD,
        **batch,
    }


class RandomWindows(_WindowBatches):
    """Training batches of windows at random positions inside the split's intervals.

    An interval is drawn with probability proportional to the number of window positions it holds
    (``max(len - L + 1, 1)``), then a start uniformly; windows with more than ``max_n_fraction`` N are
    redrawn (up to 100 times, then kept). With ``rc_augment`` half of the windows are reverse-complemented (tokens
    complemented and reversed, soft-mask and padding reversed). ``samples_per_epoch`` windows are served per
    epoch across all ranks.
    """

    MAX_TRIES = 100

    def __init__(self, *args, samples_per_epoch: int = 1024, **kwargs):
        super().__init__(*args, **kwargs)
        if not self.intervals:
            raise GenossmError("the training split is empty: no interval to draw windows from")
        self.samples_per_epoch = int(samples_per_epoch)
        self._index_intervals()
        self._refresh()

    def _refresh(self) -> None:
        lengths = np.array([e - s for _, s, e in self.intervals], dtype=np.int64)
        weights = np.maximum(lengths - self.window_len + 1, 1).astype(np.float64)
        self._cum = np.cumsum(weights / weights.sum())
        self._cum[-1] = 1.0

    def set_window_len(self, window_len: int) -> None:
        self.window_len = int(window_len)
        self._refresh()

    def __len__(self) -> int:
        return max(1, math.ceil(self.samples_per_epoch / (self.batch_size * self.world_size)))

    def batch(self, epoch: int, index: int) -> dict:
        """Batch ``index`` of ``epoch`` on this rank: a pure function of (seed, epoch, rank, index)."""
        rng = np.random.default_rng([self.seed, epoch, self.rank, index])
        B = self.batch_size
        rc = rng.random(B) < 0.5 if self.rc_augment else np.zeros(B, dtype=bool)
        packed = np.empty((B, self.window_len), dtype=np.uint8)
        k_all = np.empty(B, dtype=np.int64)
        starts = np.empty(B, dtype=np.int64)
        todo = np.arange(B)
        for _ in range(self.MAX_TRIES):  # redraw the windows that are mostly N
            k = np.minimum(np.searchsorted(self._cum, rng.random(len(todo)), side="right"), len(self.intervals) - 1)
            span = np.maximum(self._iv_end[k] - self._iv_start[k] - self.window_len, 0) + 1
            s = self._iv_start[k] + rng.integers(0, span)
            k_all[todo], starts[todo] = k, s
            self._fill_rows(packed, todo, k, s)
            if self.max_n_fraction >= 1.0:
                break
            todo = todo[self._n_bad(packed[todo], s, self._iv_end[k])]
            if not len(todo):
                break
        for row in np.flatnonzero(rc):  # <pad> complements to itself
            np.take(_PACKED_COMPLEMENT, packed[row, ::-1].copy(), out=packed[row])
        contigs = [self.intervals[int(i)][0] for i in k_all]
        return self._to_batch(packed, contigs, starts, rc)

    def __iter__(self) -> Iterator[dict]:
        epoch = self._next_epoch()
        for index in self._my_batches(len(self)):
            yield self.batch(epoch, index)


class TiledWindows(_WindowBatches):
    """Evaluation batches: each interval cut into consecutive windows of ``window_len`` (``stride`` apart,
    default ``window_len``: every base once), the last one padded at the interval's end. Tiles with more than
    ``max_n_fraction`` N are left out. No reverse complement. DDP ranks take batches in turn."""

    def __init__(self, *args, stride: int | None = None, max_windows: int | None = None, **kwargs):
        kwargs.setdefault("rc_augment", False)
        super().__init__(*args, **kwargs)
        self.stride = int(stride or self.window_len)
        self.max_windows = max_windows
        self._tile()

    def _tile(self) -> None:
        tiles = []
        for k, (contig, s, e) in enumerate(self.intervals):
            starts = np.arange(s, max(e - self.window_len, s) + 1, self.stride, dtype=np.int64)
            if len(starts) and starts[-1] + self.window_len < e:  # cover the tail with a (padded) last tile
                starts = np.append(starts, starts[-1] + self.stride)
            if self.max_n_fraction < 1.0 and len(starts):
                is_n = (np.asarray(self.cache.packed(contig)[s:e]) & 0x7F) == tokenizer.N
                cum = np.concatenate([[0], np.cumsum(is_n, dtype=np.int64)])
                lo = starts - s
                hi = np.minimum(lo + self.window_len, e - s)
                keep = (cum[hi] - cum[lo]) <= self.max_n_fraction * (hi - lo)
                starts = starts[keep]
            tiles.append(np.stack([np.full(len(starts), k, dtype=np.int64), starts], axis=1))
        self.tiles = np.concatenate(tiles) if tiles else np.zeros((0, 2), dtype=np.int64)
        if self.max_windows is not None and len(self.tiles) > self.max_windows:
            pick = np.linspace(0, len(self.tiles) - 1, int(self.max_windows)).round().astype(np.int64)
            self.tiles = self.tiles[np.unique(pick)]

    def set_window_len(self, window_len: int) -> None:
        self.window_len = self.stride = int(window_len)
        self._tile()

    def _n_global(self) -> int:
        return math.ceil(len(self.tiles) / self.batch_size)

    def __len__(self) -> int:
        n = self._n_global()
        return len(range(self.rank, n, self.world_size))

    def batch(self, index: int) -> dict:
        """Global batch ``index`` (rows ``index*B ... index*B + B - 1`` of the tile list; the last may be short)."""
        rows = self.tiles[index * self.batch_size : (index + 1) * self.batch_size]
        packed = np.empty((len(rows), self.window_len), dtype=np.uint8)
        contigs = []
        for row, (k, start) in enumerate(rows):
            contig, _, end = self.intervals[int(k)]
            self._fill(packed, row, contig, int(start), end, False)
            contigs.append(contig)
        return self._to_batch(packed, contigs, rows[:, 1].copy(), np.zeros(len(rows), dtype=bool))

    def __iter__(self) -> Iterator[dict]:
        self._next_epoch()
        mine = list(range(self.rank, self._n_global(), self.world_size))
        for local in self._my_batches(len(mine)):
            yield self.batch(mine[local])

    def bases(self) -> list[np.ndarray]:
        """Every real position of every window (this rank's), one token array per window."""
        return [t[v].numpy() for batch in self for t, v in zip(batch["tokens"], batch["valid"])]


# --------------------------------------------------------------------------------------------------
# regions


class RegionDataset(Dataset):
    """Rows of fixed-length region tokens (with ``y`` when labelled); each item names its input ``row``."""

    def __init__(self, tokens: torch.Tensor, valid: torch.Tensor, y: torch.Tensor | None = None,
                 rows: np.ndarray | None = None):
        rows = np.arange(len(tokens)) if rows is None else np.asarray(rows)
        self.tokens, self.valid, self.rows = tokens[rows], valid[rows], torch.from_numpy(rows)
        self.y = None if y is None else y[rows]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):
        item = {"tokens": self.tokens[i], "valid": self.valid[i], "row": self.rows[i]}
        if self.y is not None:
            item["y"] = self.y[i]
        return item


class SequenceDataset(Dataset):
    """Whole sequences of any length (no padding: :class:`SameLengthBatches` batches equal lengths only)."""

    def __init__(self, seqs: Sequence[np.ndarray]):
        self.seqs = seqs

    def __len__(self) -> int:
        return len(self.seqs)

    def __getitem__(self, i):
        tokens = torch.from_numpy(np.asarray(self.seqs[i]).astype(np.int64))
        return {"tokens": tokens, "valid": torch.ones_like(tokens, dtype=torch.bool), "row": torch.tensor(i)}


class SameLengthBatches(Sampler):
    """Row batches of at most ``batch_size`` sequences of one length each, lengths in order of first appearance,
    so no padding ever enters a bidirectional scan."""

    def __init__(self, seqs: Sequence[np.ndarray], batch_size: int):
        by_length: dict[int, list[int]] = {}
        for i, s in enumerate(seqs):
            by_length.setdefault(len(s), []).append(i)
        self.batches = [rows[i : i + batch_size] for rows in by_length.values() for i in range(0, len(rows), batch_size)]

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)
