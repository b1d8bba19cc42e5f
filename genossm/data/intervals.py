"""Intervals and splits: BED lines, merging and subtracting intervals, leak-free train/val/test splits.

Intervals are ``(contig, start, end)``, 0-based half-open as in BED. :func:`make_splits` cuts a genome's
token cache into train/val/test intervals that never overlap (whole contigs, BED files, or the last stretch
of every contig); :func:`assign_splits` puts the regions of a region file into splits so that overlapping
regions (or identical sequences) never land in two of them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from genossm.data import tokenizer as tok
from genossm.data.compressed import open_decompressed
from genossm.errors import GenossmError

if TYPE_CHECKING:
    from genossm.data.regions import RegionSet
    from genossm.data.token_cache import TokenCache

SPLITS = ("train", "val", "test")
Interval = tuple[str, int, int]


# --------------------------------------------------------------------------------------------------
# BED lines and interval arithmetic


def read_bed_lines(path, spaces: bool = False) -> list[tuple[int, list[str], bool]]:
    """``(line number, fields, is_comment)`` of each line of a BED or TSV file (plain or gzip), in file order.

    Blank lines and ``track``/``browser`` lines are left out; ``#`` lines are kept with ``is_comment`` True, as
    the last one before the data may name the columns. Fields are separated by tabs; with ``spaces`` a line
    without a tab is split at runs of white space instead (the split BEDs of
    :func:`read_bed` take either, region files need tabs). Checking the fields is the
    caller's: the two readers word their messages their own way.
    """
    out = []
    with open_decompressed(path, text=True) as handle:
        for lineno, raw in enumerate(handle, 1):
            line = raw.rstrip("\n").rstrip("\r")
            if not line.strip() or line.startswith(("track", "browser")):
                continue
            fields = line.split() if spaces and "\t" not in line else line.split("\t")
            out.append((lineno, fields, line.startswith("#")))
    return out


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


# --------------------------------------------------------------------------------------------------
# genome splits


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
# region splits


def overlap_groups(chrom: Sequence[str], start: Sequence[int], end: Sequence[int]) -> np.ndarray:
    """Group id per interval: intervals that overlap, directly or through a chain, share a group.

    A sweep over the intervals sorted by (contig, start): a new group begins where an interval starts
    at or after the furthest end seen so far on that contig. Groups are numbered in sorted order.
    """
    chrom = np.asarray(chrom, dtype=object)
    start = np.asarray(start, dtype=np.int64)
    end = np.asarray(end, dtype=np.int64)
    order = sorted(range(len(start)), key=lambda i: (chrom[i], start[i]))
    groups = np.empty(len(start), dtype=np.int64)
    group, reach, current = -1, None, None
    for i in order:
        if chrom[i] != current or start[i] >= reach:
            group += 1
            current, reach = chrom[i], end[i]
        else:
            reach = max(reach, end[i])
        groups[i] = group
    return groups


def fill_splits(sizes: np.ndarray, fractions: Sequence[float], rng: np.random.Generator) -> np.ndarray:
    """Assign groups (with ``sizes`` members) to splits 0/1/2 so the member counts follow ``fractions``."""
    fractions = np.asarray(fractions, dtype=float)
    if fractions.shape != (3,) or (fractions < 0).any() or fractions.sum() <= 0:
        raise GenossmError(f"split fractions must be three non-negative numbers (train, val, test), got {list(fractions)}")
    fractions = fractions / fractions.sum()
    total = sizes.sum()
    target = fractions * total
    counts = np.zeros(3)
    out = np.empty(len(sizes), dtype=np.int64)
    for g in rng.permutation(len(sizes)):
        deficit = np.where(fractions > 0, (target - counts) / np.maximum(target, 1e-9), -np.inf)
        k = int(np.argmax(deficit))
        out[g] = k
        counts[k] += sizes[g]
    return out


def assign_splits(
    regions: RegionSet,
    mode: str = "auto",
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    val_contigs: Sequence[str] | None = None,
    test_contigs: Sequence[str] | None = None,
) -> np.ndarray:
    """'train'/'val'/'test' per region, without leakage.

    * ``column``: the file's ``split`` column.
    * ``contig``: whole contigs per split (``val_contigs``/``test_contigs``, or chosen to match ``fractions``).
    * ``random``: random, but overlapping regions (and identical sequences) always land in the same split.
    * ``auto``: ``column`` when the file has one, else ``random``.
    """
    t = regions.table
    if mode == "auto":
        mode = "column" if regions.has_split else "random"
    if mode == "column":
        if not regions.has_split:
            raise GenossmError(f"{regions.source}: split.by=column but the file has no 'split' column")
        return t["split"].to_numpy(dtype=object).astype(str)
    rng = np.random.default_rng(seed)
    if mode == "contig":
        if not regions.has_coords:
            raise GenossmError(f"{regions.source}: split.by=contig needs coordinates (chrom start end)")
        contigs = list(dict.fromkeys(t["chrom"]))
        split_of = {c: "train" for c in contigs}
        if val_contigs or test_contigs:
            for names, split in ((val_contigs or [], "val"), (test_contigs or [], "test")):
                for name in names:
                    if name not in split_of:
                        raise GenossmError(f"{regions.source}: split contig {name!r} has no regions (contigs: {contigs})")
                    split_of[name] = split
        else:
            if len(contigs) < 3:
                raise GenossmError(
                    f"{regions.source}: split.by=contig needs at least 3 contigs, found {len(contigs)}; use split.by=random"
                )
            sizes = np.array([(t["chrom"] == c).sum() for c in contigs])
            assigned = fill_splits(sizes, fractions, rng)
            split_of = {c: SPLITS[k] for c, k in zip(contigs, assigned)}
        return np.array([split_of[c] for c in t["chrom"]], dtype=object).astype(str)
    if mode != "random":
        raise GenossmError(f"split.by must be auto, column, contig or random, got {mode!r}")
    if regions.has_coords:
        groups = overlap_groups(t["chrom"], t["start"], t["end"])
    else:  # identical sequences (either strand) are one group
        keys = {}
        groups = np.empty(len(t), dtype=np.int64)
        for i, seq in enumerate(t["sequence"]):
            ids = tok.encode(seq)
            key = min(ids.tobytes(), tok.reverse_complement(ids).tobytes())
            groups[i] = keys.setdefault(key, len(keys))
    sizes = np.bincount(groups)
    assigned = fill_splits(sizes, fractions, rng)
    return np.array([SPLITS[k] for k in assigned[groups]], dtype=object).astype(str)


def crossing_pairs(regions: RegionSet, splits: np.ndarray) -> list[tuple[int, int]]:
    """Pairs of overlapping regions that sit in different splits (empty when the split is leak-free)."""
    t = regions.table
    out = []
    order = np.lexsort((t["start"].to_numpy(), t["chrom"].to_numpy().astype(str)))
    active: list[int] = []
    for i in order:
        active = [j for j in active if t["chrom"].iat[j] == t["chrom"].iat[i] and t["end"].iat[j] > t["start"].iat[i]]
        out.extend((j, i) for j in active if splits[j] != splits[i])
        active.append(i)
    return out
