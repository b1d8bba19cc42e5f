"""Labelled (or unlabelled) regions: reading BED/TSV/FASTA inputs, labels, fixed-length tokens, leak-free splits.

Inputs
------
* **BED** (``.bed``, ``.bed.gz``): 0-based half-open ``chrom start end`` then the usual BED columns
  ``name score strand``. Without a header line the label is the 4th column (``name``), so a
  ``chrom start end label`` file works as is. ``track``/``browser`` lines and ``#`` comments are skipped.
* **TSV** (any other suffix, tab separated): a header line names the columns (a leading ``#`` is allowed).
  Coordinates are 0-based half-open, as in BED. Recognised names: ``chrom`` (or ``chr``, ``contig``,
  ``seqname``, ``chromosome``), ``start`` (``chromStart``), ``end`` (``chromEnd``, ``stop``), ``strand``,
  ``name``, ``split`` and the label column (``label`` unless configured). A TSV with a ``sequence``
  column and no coordinates gives the sequences themselves.
* **FASTA** (``.fa``, ``.fasta``, ``.fna``, optionally ``.gz``): each record is a region; ``label=X`` and
  ``split=Y`` tokens in the description line carry its label and split.

Every problem in the input is a :class:`~genossm.errors.GenossmError` naming the file and line.
Regions on strand ``-`` are reverse complemented; every region is centred and cropped or padded
(with ``<pad>``, ``valid`` False there) to one configured length.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from torch.utils.data import Dataset, Sampler

import numpy as np
import pandas as pd
import torch

from genossm.data import tokenizer as tok
from genossm.data.compressed import open_decompressed
from genossm.errors import GenossmError

FASTA_SUFFIXES = (".fa", ".fasta", ".fna", ".fas")
SPLITS = ("train", "val", "test")
_ALIASES = {
    "chrom": ("chrom", "chr", "chromosome", "contig", "seqname", "seqid", "#chrom"),
    "start": ("start", "chromstart"),
    "end": ("end", "chromend", "stop"),
}
_BED_COLUMNS = ("chrom", "start", "end", "name", "score", "strand")
_MISSING = {"", ".", "na", "nan", "none", "null"}
log = logging.getLogger(__name__)


@dataclass
class RegionSet:
    """Regions read from one file, in input order.

    ``table`` has one row per region and the columns ``name``, ``line`` (1-based line, or record number
    for FASTA, used in messages) and either ``chrom``/``start``/``end``/``strand`` (coordinates) or
    ``sequence``; ``label`` and ``split`` when the file has them (raw strings), plus any other columns.
    """

    source: str
    table: pd.DataFrame
    has_coords: bool
    label_column: str | None = None
    columns: list[str] = field(default_factory=list)
    label_note: str = ""  # which column the labels came from, or why a headerless BED's 4th column was not used

    def __len__(self) -> int:
        return len(self.table)

    @property
    def has_labels(self) -> bool:
        return "label" in self.table.columns

    @property
    def has_split(self) -> bool:
        return "split" in self.table.columns

    def where(self, i: int) -> str:
        """'<file> line N' for row ``i`` (record N for FASTA)."""
        what = "line" if self.has_coords or not _is_fasta(self.source) else "record"
        return f"{self.source} {what} {int(self.table['line'].iat[i])}"

    def lengths(self) -> np.ndarray:
        if self.has_coords:
            return (self.table["end"] - self.table["start"]).to_numpy()
        return self.table["sequence"].str.len().to_numpy()


def _is_fasta(path: str) -> bool:
    name = str(path).lower().removesuffix(".gz")
    return name.endswith(FASTA_SUFFIXES)


def _canonical(name: str, label_column: str | None) -> str:
    low = name.strip().lstrip("#").strip().lower()
    if label_column is not None and name.strip().lstrip("#").strip() == label_column:
        return "label"
    for canon, aliases in _ALIASES.items():
        if low in aliases:
            return canon
    return low


def _parses(text: str, kind=float) -> bool:
    """Whether ``kind(text)`` works (``float`` or ``int``)."""
    try:
        kind(text)
        return True
    except ValueError:
        return False


def read_bed_lines(path, spaces: bool = False) -> list[tuple[int, list[str], bool]]:
    """``(line number, fields, is_comment)`` of each line of a BED or TSV file (plain or gzip), in file order.

    Blank lines and ``track``/``browser`` lines are left out; ``#`` lines are kept with ``is_comment`` True, as
    the last one before the data may name the columns. Fields are separated by tabs; with ``spaces`` a line
    without a tab is split at runs of white space instead (the split BEDs of
    :func:`genossm.data.windows.read_bed` take either, region files need tabs). Checking the fields is the
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


def read_regions(path, label_column: str | None = "label", need_labels: bool = False) -> RegionSet:
    """Read a BED/TSV/FASTA of regions (see the module docstring); ``need_labels`` requires a label column.

    ``label_column=None`` reads no label: a headerless BED's 4th column is then the region name.
    """
    path = Path(path)
    if not path.is_file():
        raise GenossmError(f"regions file {path} not found")
    if path.stat().st_size == 0:
        raise GenossmError(f"{path}: the regions file is empty (0 bytes)")
    if _is_fasta(str(path)):
        regions = _read_fasta(path)
    else:
        regions = _read_table(path, label_column)
    if need_labels and not regions.has_labels:
        where = f"{path} line {regions.table['line'].min() if len(regions) else 1}"
        wanted = label_column or "label"
        if _is_fasta(str(path)):
            raise GenossmError(f"{path}: no label: put 'label=VALUE' in every record's description line")
        why = f"; {regions.label_note}" if regions.label_note else ""
        raise GenossmError(
            f"{where}: label column {wanted!r} missing (columns: {', '.join(regions.columns)}){why}; "
            "name it in a header line or set label_column=NAME"
        )
    if need_labels:
        for i, value in enumerate(regions.table["label"]):
            if value is None or str(value).strip().lower() in _MISSING:
                raise GenossmError(f"{regions.where(i)}: label is missing")
    if len(regions) == 0:
        raise GenossmError(f"regions file {path} holds no regions")
    if need_labels and regions.label_note:
        log.info("%s: %s", path, regions.label_note)
    return regions


def _read_fasta(path: Path) -> RegionSet:
    from Bio import SeqIO

    rows = []
    with open_decompressed(path, text=True) as handle:
        try:
            for number, record in enumerate(SeqIO.parse(handle, "fasta"), 1):
                row = {"name": record.id, "sequence": str(record.seq), "line": number}
                for token in record.description.split()[1:]:
                    key, sep, value = token.partition("=")
                    if sep and key in ("label", "split"):
                        row[key] = value
                rows.append(row)
        except ValueError as err:
            raise GenossmError(f"{path}: not a readable FASTA ({err})") from None
    table = pd.DataFrame(rows)
    for column in ("label", "split"):
        if column in table.columns and table[column].isna().any():
            i = int(np.flatnonzero(table[column].isna().to_numpy())[0])
            raise GenossmError(f"{path} record {i + 1}: no '{column}=' in its description while other records have one")
    for i, seq in enumerate(table["sequence"] if len(table) else []):
        if not seq:
            raise GenossmError(f"{path} record {i + 1}: empty sequence")
    return RegionSet(str(path), table, has_coords=False, label_column="label", columns=list(table.columns))


def _read_table(path: Path, label_column: str | None) -> RegionSet:
    is_bed = str(path).lower().removesuffix(".gz").endswith(".bed")
    header: list[str] | None = None
    rows: list[list[str]] = []
    lines: list[int] = []
    pending_comment: list[str] | None = None
    for lineno, fields, comment in read_bed_lines(path):
        if comment:
            if not rows:
                pending_comment = fields  # the last comment line before the data may be a header
            continue
        if header is None and not rows:
            names = [_canonical(f, label_column) for f in fields]
            looks_like_header = ("start" in names or "sequence" in names) and not (
                len(fields) > 2 and _parses(fields[1], int) and _parses(fields[2], int)
            )
            if looks_like_header:
                header = fields
                header_line = lineno
                continue
            if pending_comment is not None:
                names = [_canonical(f, label_column) for f in pending_comment]
                if "start" in names or "sequence" in names:
                    header = pending_comment
                    header_line = lineno - 1
        rows.append(fields)
        lines.append(lineno)
    for row, lineno in zip(rows, lines):
        if len(row) < 3 and len(row[0].split()) >= 3:
            raise GenossmError(
                f"{path} line {lineno}: the fields are separated by spaces, not tabs; BED and TSV files need tabs "
                f"(convert with: tr -s ' ' '\\t' < {path} > {path.stem}.tab{path.suffix})"
            )
    label_note = ""
    if header is None:
        if not is_bed and rows and not (len(rows[0]) >= 3 and _parses(rows[0][1], int)):
            raise GenossmError(f"{path} line {lines[0]}: no header line naming the columns (chrom start end label ...)")
        width = max((len(r) for r in rows), default=3)
        names = list(_BED_COLUMNS[:width]) + [f"column{i + 1}" for i in range(len(_BED_COLUMNS), width)]
        if len(names) > 3 and label_column in ("label", "name"):
            # headerless BED: the 4th column is the label when its values look like labels (numbers, or few
            # distinct values), else it is the region's name (BED6's name column is no label)
            values = [r[3].strip() for r in rows if len(r) > 3]
            distinct = len(set(values))
            numeric = sum(_parses(v) for v in values)
            if numeric == len(values) or distinct <= max(2, len(values) // 2):
                names[3] = "label"
                label_note = f"labels read from the 4th column of the header-less file ({distinct} distinct values)"
            else:
                label_note = (f"the file has no header and its 4th column holds {distinct} distinct values for "
                              f"{len(values)} regions, which look like region names, not labels")
        columns = names
    else:
        names = [_canonical(f, label_column) for f in header]
        columns = [f.strip().lstrip("#").strip() for f in header]
        if "label" in names:
            label_note = f"labels read from column {names.index('label') + 1} ({columns[names.index('label')]!r})"
    seen = set()
    for name in names:
        if name in seen:
            raise GenossmError(f"{path} line {header_line}: column {name!r} appears twice in the header")
        seen.add(name)
    has_coords = {"chrom", "start", "end"} <= set(names)
    if not has_coords and "sequence" not in names:
        raise GenossmError(
            f"{path}: the columns ({', '.join(columns)}) have neither chrom/start/end nor sequence"
        )
    for row, lineno in zip(rows, lines):
        if len(row) != len(names) and header is not None:
            raise GenossmError(f"{path} line {lineno}: {len(row)} columns where the header names {len(names)}")
        if len(row) < 3 and has_coords:
            raise GenossmError(f"{path} line {lineno}: fewer than 3 columns (chrom start end)")
    width = len(names)
    table = pd.DataFrame([r + [""] * (width - len(r)) for r in rows], columns=names, dtype=object)
    table["line"] = lines
    if has_coords:
        starts, ends = np.zeros(len(table), np.int64), np.zeros(len(table), np.int64)
        for i, (s, e, lineno) in enumerate(zip(table["start"], table["end"], lines)):
            try:
                starts[i], ends[i] = int(s), int(e)
            except ValueError:
                raise GenossmError(f"{path} line {lineno}: start/end {s!r}/{e!r} are not integers") from None
            if starts[i] < 0:
                raise GenossmError(f"{path} line {lineno}: start {starts[i]} is negative (BED is 0-based)")
            if ends[i] < starts[i]:
                raise GenossmError(f"{path} line {lineno}: end {ends[i]} < start {starts[i]}")
            if ends[i] == starts[i]:
                raise GenossmError(f"{path} line {lineno}: empty region (end == start == {starts[i]})")
        table["start"], table["end"] = starts, ends
        table["chrom"] = table["chrom"].astype(str)
        if "strand" in table.columns:
            strands = table["strand"].astype(str).str.strip().replace({"": "+", ".": "+"})
            bad = ~strands.isin(["+", "-"])
            if bad.any():
                i = int(np.flatnonzero(bad.to_numpy())[0])
                read_as = "" if header is not None else (
                    f"; the file has no header line, so its {width} columns are read as BED ("
                    f"{' '.join(_BED_COLUMNS[:width])}{' ...' if width > 6 else ''}): add a header line naming them")
                raise GenossmError(
                    f"{path} line {lines[i]}: strand {table['strand'].iat[i]!r} (column {names.index('strand') + 1}) "
                    f"is not +, - or .{read_as}")
            table["strand"] = strands
        else:
            table["strand"] = "+"
    else:
        for i, seq in enumerate(table["sequence"]):
            if not str(seq).strip():
                raise GenossmError(f"{path} line {lines[i]}: empty sequence")
    if "name" not in table.columns:
        if has_coords:
            table["name"] = [f"{c}:{s}-{e}({st})" for c, s, e, st in zip(table["chrom"], table["start"], table["end"], table["strand"])]
        else:
            table["name"] = [f"seq{i + 1}" for i in range(len(table))]
    if "split" in table.columns:
        split = table["split"].astype(str).str.strip().str.lower().replace({"valid": "val", "validation": "val", "training": "train"})
        bad = ~split.isin(SPLITS)
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise GenossmError(f"{path} line {lines[i]}: split {table['split'].iat[i]!r} is not train, val or test")
        table["split"] = split
    return RegionSet(str(path), table, has_coords=has_coords, label_column=label_column, columns=columns,
                     label_note=label_note)


# --------------------------------------------------------------------------------------------- genome checks


def check_regions(regions: RegionSet, genome) -> list[str]:
    """Check every region against ``genome``; return the genome's own contig name per row.

    Raises GenossmError naming the line for an unknown contig or a region past the contig end.
    """
    if not regions.has_coords:
        return []
    resolved: dict[str, str] = {}
    out = []
    lengths = getattr(genome, "all_lengths", None) or genome.lengths
    for i, (chrom, end) in enumerate(zip(regions.table["chrom"], regions.table["end"])):
        if chrom not in resolved:
            try:
                resolved[chrom] = genome.resolve(chrom)
            except (GenossmError, KeyError):
                known = ", ".join(list(lengths)[:10])
                raise GenossmError(
                    f"{regions.where(i)}: contig {chrom!r} is not in {genome.path} (contigs: {known})"
                ) from None
        name = resolved[chrom]
        if end > lengths[name]:
            raise GenossmError(
                f"{regions.where(i)}: region end {end} is beyond the end of {chrom} ({lengths[name]} bp in {genome.path})"
            )
        out.append(name)
    return out


def region_sequences(regions: RegionSet, genome=None) -> list[np.ndarray]:
    """Token ids (uint8) of every region as read on its strand: genome slice, reverse complemented on ``-``."""
    if not regions.has_coords:
        return [tok.encode(s) for s in regions.table["sequence"]]
    if genome is None:
        raise GenossmError(f"{regions.source} gives coordinates: a genome (fasta=PATH) is needed to read them")
    contigs = check_regions(regions, genome)
    out = []
    t = regions.table
    for contig, start, end, strand in zip(contigs, t["start"], t["end"], t["strand"]):
        ids = tok.encode(genome.fetch(contig, int(start), int(end)))
        out.append(np.ascontiguousarray(tok.reverse_complement(ids)) if strand == "-" else ids)
    return out


def center_fit(ids: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Crop ``ids`` to its central ``length`` bases, or pad both sides with ``<pad>``; returns (ids, valid)."""
    n = len(ids)
    out = np.full(length, tok.PAD, dtype=np.uint8)
    valid = np.zeros(length, dtype=bool)
    if n >= length:
        offset = (n - length) // 2
        out[:] = ids[offset : offset + length]
        valid[:] = True
    else:
        left = (length - n) // 2
        out[left : left + n] = ids
        valid[left : left + n] = True
    return out, valid


# region_len=auto rounds the longest region up to a multiple of this: at most 7 <pad> positions more than the
# longest region, and lengths that tile evenly on a GPU; a fixed 200 padded 81 bp promoters to 2.5x the work
REGION_LEN_MULTIPLE = 8


def auto_region_len(lengths, max_len: int | None = None) -> int:
    """``region_len=auto``: the longest of ``lengths`` rounded up to a multiple of :data:`REGION_LEN_MULTIPLE`,
    at most ``max_len`` (the model's training window, when it records one)."""
    longest = max((int(n) for n in lengths), default=0)
    length = max(REGION_LEN_MULTIPLE, -(-longest // REGION_LEN_MULTIPLE) * REGION_LEN_MULTIPLE)
    if max_len:
        if longest > int(max_len):
            log.warning("region_len=auto: the longest region (%d bp) is longer than the model's training window; "
                        "regions are centred and cropped to %d bp (set region_len=N to choose)", longest, int(max_len))
        length = min(length, int(max_len))
    return length


def region_tokens(regions: RegionSet, genome=None, region_len: int | str | None = None,
                  max_len: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens LongTensor (N, L), valid BoolTensor (N, L)) of every region, centred to ``region_len``.

    ``region_len=None`` uses the longest region; ``"auto"`` the longest rounded up (:func:`auto_region_len`,
    capped by ``max_len``); a number is used as given.
    """
    seqs = region_sequences(regions, genome)
    longest = max(len(s) for s in seqs)
    if region_len == "auto":
        length = auto_region_len([longest], max_len)
        log.info("region_len=auto: %d bp (the longest region is %d bp)", length, longest)
    else:
        length = int(region_len or longest)
    if length <= 0:
        raise GenossmError(f"region_len must be positive, got {length}")
    tokens = np.empty((len(seqs), length), dtype=np.uint8)
    valid = np.empty((len(seqs), length), dtype=bool)
    for i, s in enumerate(seqs):
        tokens[i], valid[i] = center_fit(s, length)
    return torch.from_numpy(tokens.astype(np.int64)), torch.from_numpy(valid)


# --------------------------------------------------------------------------------------------- labels


@dataclass
class Labels:
    """Encoded labels: ``task`` in binary/multiclass/regression, ``y`` float (binary, regression) or long."""

    task: str
    y: torch.Tensor
    classes: list[str] | None = None

    @property
    def n_outputs(self) -> int:
        return len(self.classes) if self.task == "multiclass" else 1


def _class_sort_key(value: str):
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)


def encode_labels(regions: RegionSet, task: str = "auto", classes: Sequence[str] | None = None) -> Labels:
    """Turn the raw label column into targets.

    ``auto``: labels all 0/1 -> binary; other numbers -> regression; text -> binary with two classes,
    else multiclass. ``classes`` (from a saved model) fixes the class order.
    """
    if not regions.has_labels:
        raise GenossmError(f"{regions.source}: no label column")
    fixed_classes = classes is not None  # labels to score with a trained model's classes: no training checks
    raw = [str(v).strip() for v in regions.table["label"]]
    numeric = []
    for value in raw:
        try:
            numeric.append(float(value))
        except ValueError:
            numeric.append(None)
    if task == "auto":
        n_numeric = sum(v is not None for v in numeric)
        if n_numeric == len(numeric):
            task = "binary" if set(numeric) <= {0.0, 1.0} else "regression"
        elif n_numeric >= len(numeric) / 2:
            i = next(i for i, v in enumerate(numeric) if v is None)
            raise GenossmError(
                f"{regions.where(i)}: label {raw[i]!r} is not a number while {n_numeric} of the {len(raw)} labels are; "
                "fix that line (or set task=multiclass if the labels really are class names)"
            )
        else:
            task = "binary" if len(set(raw)) == 2 else "multiclass"
    if task == "regression":
        for i, v in enumerate(numeric):
            if v is None or not math.isfinite(v):
                raise GenossmError(f"{regions.where(i)}: label {raw[i]!r} is not a number (task is regression)")
        return Labels("regression", torch.tensor(numeric, dtype=torch.float32))
    if task not in ("binary", "multiclass"):
        raise GenossmError(f"task must be auto, binary, multiclass or regression, got {task!r}")
    if classes is None:
        if task == "binary" and all(v is not None for v in numeric) and set(numeric) <= {0.0, 1.0}:
            classes = ["0", "1"]
            raw = [str(int(v)) for v in numeric]
        else:
            classes = sorted(set(raw), key=_class_sort_key)
    else:
        classes = [str(c) for c in classes]
        if task == "binary" and classes == ["0", "1"]:
            raw = [str(int(v)) if v is not None and v in (0.0, 1.0) else r for v, r in zip(numeric, raw)]
    index = {c: k for k, c in enumerate(classes)}
    present = sorted(set(raw), key=_class_sort_key)
    if not fixed_classes and len(present) < 2:
        raise GenossmError(
            f"{regions.source}: every region has the label {present[0]!r}; a classifier needs at least two classes"
        )
    if not fixed_classes and task == "multiclass" and len(present) > len(raw) / 2:
        raise GenossmError(
            f"{regions.source}: {len(present)} classes for {len(raw)} regions (more than half as many classes as "
            f"regions): the label column ({regions.label_note or 'label'}) looks like names, not labels; name the "
            "label column with label_column=NAME"
        )
    if task == "binary" and len(classes) != 2:
        raise GenossmError(f"{regions.source}: binary task needs exactly 2 label values, found {len(classes)}: {classes[:10]}")
    y = np.empty(len(raw), dtype=np.int64)
    for i, value in enumerate(raw):
        if value not in index:
            raise GenossmError(f"{regions.where(i)}: label {value!r} is not one of the classes {classes}")
        y[i] = index[value]
    y_t = torch.from_numpy(y)
    return Labels(task, y_t.float() if task == "binary" else y_t, list(classes))


def check_split_classes(regions: RegionSet, labels: Labels, splits: np.ndarray) -> None:
    """Every non-empty split of a classification task must hold at least two classes: training on one class
    learns nothing, and MCC, AUROC and balanced accuracy are undefined on a split with one class."""
    if labels.task == "regression":
        return
    y = labels.y.long().numpy()
    for split in SPLITS:
        rows = np.flatnonzero(splits == split)
        present = sorted({labels.classes[k] for k in y[rows]}, key=_class_sort_key) if len(rows) else []
        if len(rows) and len(present) < 2:
            raise GenossmError(
                f"{regions.source}: the {split} split ({len(rows)} regions) holds only the class {present[0]!r}; "
                "a classifier and its metrics need two classes in every split: change split.by or split.fractions, "
                "or give the file a split column"
            )


# --------------------------------------------------------------------------------------------- splits


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


def open_genome(path, workflow: str = "this workflow"):
    """The genome reader shared by the region workflows (one FASTA file)."""
    from genossm.data.genome import Genome, one_fasta

    return Genome(one_fasta(path, workflow))


# --------------------------------------------------------------------------------------------- datasets


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
