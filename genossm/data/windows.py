"""Token cache and sequence windows.

:class:`TokenCache` encodes a FASTA once into uint8 memory-mapped files (one per contig, one byte per base:
token id in the low bits, soft-mask in bit 7, see :func:`genossm.data.tokenizer.pack`). It is reused while
the FASTA is unchanged (same size and modification time) and rebuilt when it changed.

Splits are lists of intervals ``(contig, start, end)`` (0-based, half-open) that never overlap; a window
always lies inside one interval, so no window crosses a split boundary. A window longer than its interval
(or contig) is padded with ``<pad>`` and marked ``valid=False`` there.

:class:`RandomWindows` (training) and :class:`TiledWindows` (evaluation) are iterable datasets that yield
whole batches, built with numpy slicing of the memmap (no per-base Python), so one worker serves hundreds of
millions of tokens per second. Each batch is drawn from its own random generator seeded by
``(seed, epoch, rank, batch index)``: a run repeats exactly, whatever the number of workers, and each
DDP rank reads different windows.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from genossm.data import tokenizer
from genossm.data.genome import (
    Genome,
    cache_folder,
    canonical_contig,
    fasta_paths,
    fingerprint,
    resolve_contig,
    select_contigs,
)
from genossm.data.regions import read_bed_lines
from genossm.errors import GenossmError, atomic_write

log = logging.getLogger(__name__)

CACHE_VERSION = 1
BUILD_BLOCK = 1 << 23  # bases per pyfaidx read while building the cache

# packed byte -> packed byte of the complementary base (soft-mask bit kept)
_PACKED_COMPLEMENT = np.arange(256, dtype=np.uint8)
for _byte in range(256):
    _id = _byte & 0x7F
    if _id < tokenizer.VOCAB_SIZE:
        _PACKED_COMPLEMENT[_byte] = (_byte & 0x80) | int(tokenizer.COMPLEMENT[_id])


# --------------------------------------------------------------------------------------------------
# token cache


@contextlib.contextmanager
def _cache_lock(fasta: Path, cache_dir) -> Iterator[None]:
    """Hold an exclusive lock on the cache folder of ``fasta`` while its index and token cache are checked or
    built: DDP ranks started together (SLURM) open the same genome at once, and one of them builds while the
    others wait, then reuse it. (An advisory ``flock``; where the file system has none, no lock.)"""
    try:
        import fcntl
    except ImportError:  # not on a POSIX system
        yield
        return
    if not fasta.exists():
        yield  # the caller reports the missing file
        return
    path = cache_folder(fasta, cache_dir) / ".lock"
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
            locked = True
        except OSError:
            locked = False
        try:
            yield
        finally:
            if locked:
                fcntl.flock(handle, fcntl.LOCK_UN)


class TokenCache:
    """Packed tokens of a FASTA's contigs in memory-mapped files, built once and reused.

    Open with :meth:`TokenCache.open`. Only the contigs asked for are encoded (all by default); asking for
    more later encodes just those.
    """

    def __init__(self, fasta: Path, folder: Path, manifest: dict, contig_names: list[str]):
        self.fasta = fasta
        self.paths = [fasta]  # the FASTA files of the genome (see MultiTokenCache)
        self.folder = folder
        self._manifest = manifest
        self.contig_names = contig_names
        self.all_lengths: dict[str, int] = {n: int(c["length"]) for n, c in manifest["contigs"].items()}
        self.lengths: dict[str, int] = {n: self.all_lengths[n] for n in contig_names}
        self._maps: dict[str, np.ndarray] = {}

    # -- building ---------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        fasta: str | os.PathLike,
        cache_dir: str | os.PathLike | None = None,
        contigs=None,
    ) -> "TokenCache":
        """The token cache of ``fasta`` (plain, gzip or bgzip), building the missing parts.

        ``cache_dir``: where caches go (default: ``.genossm-cache/`` beside the FASTA, or the user cache
        folder when that is read-only). ``contigs``: names, aliases or a regular expression (default all).
        For a genome spread over several files use :func:`open_tokens`.
        """
        fasta = Path(fasta)
        with _cache_lock(fasta, cache_dir):
            folder, manifest, genome = cls._manifest(fasta, cache_dir)
            names = select_contigs(list(manifest["contigs"]), contigs, str(fasta))
            if not names:
                raise GenossmError(f"{fasta}: no contig matches {contigs!r}")
            return cls._build(fasta, cache_dir, folder, manifest, names, genome)

    @staticmethod
    def _manifest(fasta: Path, cache_dir) -> tuple[Path, dict, Genome | None]:
        """The cache folder and manifest of ``fasta`` (contig names and lengths; what is built), reset when
        the file changed since; the :class:`Genome` when it had to be opened for that."""
        if not fasta.exists():
            raise GenossmError(f"{fasta}: FASTA file not found")
        folder = cache_folder(fasta, cache_dir) / "tokens"
        folder.mkdir(parents=True, exist_ok=True)
        manifest_path = folder / "manifest.json"
        source = {"path": str(fasta.resolve()), **fingerprint(fasta), "version": CACHE_VERSION}
        manifest = None
        if manifest_path.exists():
            with contextlib.suppress(ValueError, OSError):
                manifest = json.loads(manifest_path.read_text())
            if manifest is not None and manifest.get("source") != source:
                log.info("%s changed since its token cache was built: rebuilding %s", fasta, folder)
                manifest = None
                for child in folder.iterdir():
                    if child.name != manifest_path.name:
                        child.unlink()
        genome = None
        if manifest is None:
            genome = Genome(fasta, cache_dir=cache_dir)
            manifest = {
                "source": source,
                "contigs": {
                    name: {"length": genome.all_lengths[name], "file": f"contig{i:06d}.u8", "built": False}
                    for i, name in enumerate(genome.all_lengths)
                },
            }
        return folder, manifest, genome

    @classmethod
    def _build(cls, fasta: Path, cache_dir, folder: Path, manifest: dict, names: list[str],
               genome: Genome | None = None) -> "TokenCache":
        """Encode the contigs ``names`` that are not in the cache yet; the cache over ``names``."""
        manifest_path = folder / "manifest.json"
        todo = [n for n in names if not manifest["contigs"][n]["built"] or not (folder / manifest["contigs"][n]["file"]).exists()]
        if todo:
            genome = genome or Genome(fasta, cache_dir=cache_dir)
            started = time.perf_counter()
            total = sum(manifest["contigs"][n]["length"] for n in todo)
            log.info("encoding %d contig(s), %s bases of %s into the token cache %s", len(todo), f"{total:,}", fasta, folder)
            for name in todo:
                entry = manifest["contigs"][name]
                _encode_contig(genome, name, folder / entry["file"])
                entry["built"] = True
                with atomic_write(manifest_path, "w") as handle:
                    json.dump(manifest, handle, indent=1)
            log.info("token cache built in %.1f s", time.perf_counter() - started)
        return cls(fasta, folder, manifest, names)

    # -- reading ----------------------------------------------------------------------------------

    def resolve(self, name: str) -> str:
        return resolve_contig(list(self.all_lengths), name, str(self.fasta))

    def file_of(self, contig: str) -> Path:
        """The FASTA file holding ``contig``."""
        self.resolve(contig)
        return self.fasta

    def packed(self, contig: str) -> np.ndarray:
        """The whole contig as a read-only uint8 memmap of packed tokens."""
        name = contig if contig in self._maps else self.resolve(contig)
        arr = self._maps.get(name)
        if arr is None:
            entry = self._manifest["contigs"][name]
            if not entry["built"]:
                raise GenossmError(f"{self.fasta}: contig {name!r} was not selected when the token cache was opened")
            length = int(entry["length"])
            arr = np.memmap(self.folder / entry["file"], dtype=np.uint8, mode="r", shape=(length,)) if length else np.zeros(0, np.uint8)
            self._maps[name] = arr
        return arr

    def tokens(self, contig: str, start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
        """``(uint8 ids, bool soft-mask)`` of bases ``[start, end)`` (0-based, half-open)."""
        arr = self.packed(contig)
        if not 0 <= start <= end <= len(arr):
            raise GenossmError(f"{self.fasta}: region {contig}:{start}-{end} is outside the contig (length {len(arr)})")
        return tokenizer.unpack(np.asarray(arr[start:end]))

    def n_fraction(self, contig: str, start: int = 0, end: int | None = None) -> float:
        arr = self.packed(contig)
        end = len(arr) if end is None else end
        return float(np.count_nonzero((arr[start:end] & 0x7F) == tokenizer.N)) / max(end - start, 1)

    def __getstate__(self):  # memmaps reopen lazily in each worker process
        state = dict(self.__dict__)
        state["_maps"] = {}
        return state

    def __repr__(self) -> str:
        return f"TokenCache({str(self.fasta)!r}, {len(self.contig_names)} contigs, {sum(self.lengths.values()):,} bp)"


class MultiTokenCache:
    """A genome spread over several FASTA files (``fasta=[a.fa,b.fa.gz]``): the contigs of all files together,
    in list order, with the reading interface of :class:`TokenCache`.

    Each file keeps its own :class:`TokenCache` (rebuilt when that file changes). A contig name present in
    two files, or two names that the alias table makes one contig (``chr20`` and ``20``), is an error: the
    contigs of the list form one genome. Open with :func:`open_tokens`.
    """

    def __init__(self, caches: Sequence[TokenCache], contig_names: list[str]):
        self.caches = list(caches)
        self.paths = [c.fasta for c in self.caches]
        self.fasta = " + ".join(str(p) for p in self.paths)  # for messages
        self._owner = {name: cache for cache in self.caches for name in cache.all_lengths}
        self.all_lengths: dict[str, int] = {n: c.all_lengths[n] for n, c in self._owner.items()}
        self.contig_names = list(contig_names)
        self.lengths: dict[str, int] = {n: self.all_lengths[n] for n in self.contig_names}

    def resolve(self, name: str) -> str:
        return resolve_contig(list(self.all_lengths), name, self.fasta)

    def file_of(self, contig: str) -> Path:
        return self._owner[self.resolve(contig)].fasta

    def packed(self, contig: str) -> np.ndarray:
        name = contig if contig in self._owner else self.resolve(contig)
        return self._owner[name].packed(name)

    def tokens(self, contig: str, start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
        name = self.resolve(contig)
        return self._owner[name].tokens(name, start, end)

    def n_fraction(self, contig: str, start: int = 0, end: int | None = None) -> float:
        name = self.resolve(contig)
        return self._owner[name].n_fraction(name, start, end)

    def __repr__(self) -> str:
        return f"MultiTokenCache({len(self.paths)} files, {len(self.contig_names)} contigs, {sum(self.lengths.values()):,} bp)"


def open_tokens(fasta, cache_dir: str | os.PathLike | None = None, contigs=None) -> TokenCache | MultiTokenCache:
    """The token cache of a genome given as one FASTA path or a list of them (see :func:`fasta_paths`).

    ``contigs`` (names, aliases or a regular expression) picks among the contigs of all files; only the
    picked contigs are encoded. One file gives a :class:`TokenCache`, several a :class:`MultiTokenCache`.
    """
    paths = fasta_paths(fasta)
    if len(paths) == 1:
        return TokenCache.open(paths[0], cache_dir, contigs)
    with contextlib.ExitStack() as locks:
        for path in paths:  # always in list order: two processes opening the same list cannot deadlock
            if not path.exists():
                raise GenossmError(f"{path}: FASTA file not found")
            locks.enter_context(_cache_lock(path, cache_dir))
        return _open_several(paths, cache_dir, contigs)


def _open_several(paths: list[Path], cache_dir, contigs) -> MultiTokenCache:
    opened = [(path, *TokenCache._manifest(path, cache_dir)) for path in paths]
    seen: dict[str, tuple[str, Path]] = {}  # alias key -> (name, file)
    for path, _, manifest, _ in opened:
        for name in manifest["contigs"]:
            key = canonical_contig(name)
            if key in seen and seen[key][1] != path:  # inside one file the alias table resolves exact names first
                other, other_path = seen[key]
                same = f"contig {name!r}" if other == name else f"contigs {other!r} and {name!r} (the same contig by the alias table)"
                raise GenossmError(
                    f"{other_path} and {path}: {same} in both files; the FASTA files of a list form one genome, so "
                    "contig names must be unique across them (rename one, or leave one file out)"
                )
            seen.setdefault(key, (name, path))
    source = " + ".join(str(p) for p in paths)
    names = select_contigs([n for _, _, m, _ in opened for n in m["contigs"]], contigs, source)
    if not names:
        raise GenossmError(f"{source}: no contig matches {contigs!r}")
    picked = set(names)
    caches = [
        TokenCache._build(path, cache_dir, folder, manifest, [n for n in manifest["contigs"] if n in picked], genome)
        for path, folder, manifest, genome in opened
    ]
    return MultiTokenCache(caches, names)


def _encode_contig(genome: Genome, name: str, target: Path) -> None:
    length = genome.all_lengths[name]
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as out:
            for _, seq in genome.iter_blocks(name, BUILD_BLOCK):
                ids, soft = tokenizer.encode_with_softmask(seq.encode("ascii", errors="replace"))
                out.write(tokenizer.pack(ids, soft).tobytes())
        if tmp.stat().st_size != length:
            raise GenossmError(f"{genome.path}: contig {name!r} gave {tmp.stat().st_size} bases instead of {length}")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------------
# splits


Interval = tuple[str, int, int]


def read_bed(path: str | os.PathLike, cache: TokenCache) -> list[Interval]:
    """BED intervals (0-based half-open, as BED is) with contig names resolved against the cache."""
    path = Path(path)
    if not path.exists():
        raise GenossmError(f"{path}: BED file not found")
    out = []
    for lineno, fields, comment in read_bed_lines(path, spaces=True):
        if comment:
            continue
        if len(fields) < 3:
            raise GenossmError(f"{path}: line {lineno}: expected at least 3 columns (contig, start, end)")
        try:
            start, end = int(fields[1]), int(fields[2])
        except ValueError:
            raise GenossmError(f"{path}: line {lineno}: start and end must be integers, got {fields[1]!r}, {fields[2]!r}") from None
        try:
            contig = cache.resolve(fields[0])
        except GenossmError as err:
            raise GenossmError(f"{path}: line {lineno}: {err}") from None
        length = cache.all_lengths[contig]
        if not 0 <= start < end <= length:
            raise GenossmError(f"{path}: line {lineno}: interval {fields[0]}:{start}-{end} is empty or outside the contig (length {length})")
        out.append((contig, start, end))
    if not out:
        raise GenossmError(f"{path}: no intervals in the BED file")
    return merge_intervals(out)


def merge_intervals(intervals: Sequence[Interval]) -> list[Interval]:
    """Sorted (by contig first appearance, then start) with overlapping or touching intervals merged."""
    order: dict[str, int] = {}
    for c, _, _ in intervals:
        order.setdefault(c, len(order))
    out: list[list] = []
    for c, s, e in sorted(intervals, key=lambda iv: (order[iv[0]], iv[1], iv[2])):
        if out and out[-1][0] == c and s <= out[-1][2]:
            out[-1][2] = max(out[-1][2], e)
        else:
            out.append([c, s, e])
    return [(c, int(s), int(e)) for c, s, e in out]


def subtract_intervals(base: Sequence[Interval], remove: Sequence[Interval]) -> list[Interval]:
    out = []
    by_contig: dict[str, list[tuple[int, int]]] = {}
    for c, s, e in merge_intervals(remove):
        by_contig.setdefault(c, []).append((s, e))
    for c, s, e in base:
        pos = s
        for rs, re_ in by_contig.get(c, []):
            if re_ <= pos or rs >= e:
                continue
            if rs > pos:
                out.append((c, pos, rs))
            pos = max(pos, re_)
        if pos < e:
            out.append((c, pos, e))
    return out


def _overlap(a: Sequence[Interval], b: Sequence[Interval]) -> Interval | None:
    for c, s, e in a:
        for c2, s2, e2 in b:
            if c == c2 and s < e2 and s2 < e:
                return (c, max(s, s2), min(e, e2))
    return None


@dataclass
class SplitSpec:
    """How to split a genome into train/val/test (see :func:`make_splits`)."""

    val_contigs: Sequence[str] | None = None
    test_contigs: Sequence[str] | None = None
    train_bed: str | None = None
    val_bed: str | None = None
    test_bed: str | None = None
    val_fraction: float = 0.0
    test_fraction: float = 0.0


def make_splits(cache: TokenCache, spec: SplitSpec) -> dict[str, list[Interval]]:
    """Train/val/test intervals over ``cache.contig_names`` that never overlap.

    * ``val_bed``/``test_bed`` (and optionally ``train_bed``; default: everything else);
    * ``val_contigs``/``test_contigs``: whole contigs (train: the other selected contigs);
    * ``val_fraction``/``test_fraction``: the last stretches of every contig (train ``| val | test`` at the end).
    Kinds combine: a contig named in ``val_contigs`` is removed from every other split.
    """
    whole = [(c, 0, cache.lengths[c]) for c in cache.contig_names if cache.lengths[c] > 0]
    splits: dict[str, list[Interval]] = {"train": [], "val": [], "test": []}
    held: list[Interval] = []
    for split, names in (("val", spec.val_contigs), ("test", spec.test_contigs)):
        for name in names or []:
            c = cache.resolve(name)
            if c not in cache.lengths:
                raise GenossmError(f"{cache.fasta}: {split} contig {name!r} is not among the selected contigs {cache.contig_names}")
            splits[split].append((c, 0, cache.all_lengths[c]))
    for split, bed in (("val", spec.val_bed), ("test", spec.test_bed)):
        if bed:
            splits[split] += read_bed(bed, cache)
    if spec.val_fraction or spec.test_fraction:
        if not 0 <= spec.val_fraction + spec.test_fraction < 1:
            raise GenossmError(f"val_fraction + test_fraction must be in [0, 1), got {spec.val_fraction} + {spec.test_fraction}")
        taken = merge_intervals(splits["val"] + splits["test"])
        for c, s, e in subtract_intervals(whole, taken):
            n = e - s
            n_test = int(round(n * spec.test_fraction))
            n_val = int(round(n * spec.val_fraction))
            if n_val:
                splits["val"].append((c, e - n_test - n_val, e - n_test))
            if n_test:
                splits["test"].append((c, e - n_test, e))
    for split in ("val", "test"):
        splits[split] = merge_intervals(splits[split])
    clash = _overlap(splits["val"], splits["test"])
    if clash:
        raise GenossmError(f"the validation and test splits overlap at {clash[0]}:{clash[1]}-{clash[2]} (check {spec.val_bed or spec.val_contigs} and {spec.test_bed or spec.test_contigs})")
    held = merge_intervals(splits["val"] + splits["test"])
    if spec.train_bed:
        train = read_bed(spec.train_bed, cache)
        clash = _overlap(train, held)
        if clash:
            raise GenossmError(f"{spec.train_bed}: training intervals overlap the validation/test split at {clash[0]}:{clash[1]}-{clash[2]}")
        splits["train"] = train
    else:
        splits["train"] = subtract_intervals(whole, held)
    return splits


# --------------------------------------------------------------------------------------------------
# windows


def _rank_and_world() -> tuple[int, int]:
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
            rank, world_size = _rank_and_world()
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
