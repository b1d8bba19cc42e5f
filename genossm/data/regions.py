"""Labelled (or unlabelled) regions: reading BED/TSV/FASTA inputs, and their sequences as fixed-length tokens.

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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from genossm.data import tokenizer as tok
from genossm.data.compressed import open_decompressed
from genossm.data.intervals import SPLITS, read_bed_lines
from genossm.errors import GenossmError

FASTA_SUFFIXES = (".fa", ".fasta", ".fna", ".fas")
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


def open_genome(path, workflow: str = "this workflow"):
    """The genome reader shared by the region workflows (one FASTA file)."""
    from genossm.data.genome import Genome, one_fasta

    return Genome(one_fasta(path, workflow))
