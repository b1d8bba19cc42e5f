"""Labelled variants for ``genossm evaluate-variants``: the labels, match groups, score columns and categories
a user brings beside each variant, and the scores of an earlier ``score-variants`` run, read into one table
with one row per ALT allele.

A column is a TSV column (named in the header, matched as :class:`~genossm.data.variants.VariantReader` matches
``chrom``/``pos``: case and a leading ``#`` ignored) or, in a VCF/BCF, an INFO key. A value given per ALT
(an INFO field with one value per ALT allele, or comma-separated values in a TSV cell, as many as ALTs) goes
to its allele; a single value to every allele of the record. The records are read by
:class:`~genossm.data.variants.VariantReader` and numbered by :class:`~genossm.data.variants.AlleleNumbering`,
so the rows are the alleles ``score-variants`` scores, in the same order. Every problem is a
:class:`~genossm.errors.GenossmError` naming the file and the line.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from genossm.data.genome import canonical_contig
from genossm.data.variants import AlleleNumbering, VariantReader, VariantRecord
from genossm.errors import GenossmError

MISSING = ("", ".", "na", "nan", "none", "null")
VALUE = "value:"  # the table's name of a requested column (a user's column may be called chrom or kind too)
TRUE, FALSE = ("true", "yes"), ("false", "no")


def variant_kind(ref: str, alt: str) -> str:
    """snv | mnv | insertion | deletion | other (symbolic or missing ALT)."""
    if not alt or alt == "." or alt == "*" or alt.startswith("<") or "[" in alt or "]" in alt:
        return "other"
    if len(ref) == len(alt):
        return "snv" if len(ref) == 1 else "mnv"
    return "insertion" if len(alt) > len(ref) else "deletion"


def _as_written(value):
    """A VCF Float as its text in the file: htslib stores 32-bit floats, so AF=0.05 reads back as
    0.05000000074505806; the shortest decimal of the 32-bit value is what the file said (and what a
    threshold such as ``label_threshold=0.05`` is compared with)."""
    if isinstance(value, float):
        return float(str(np.float32(value)))
    if isinstance(value, tuple):
        return tuple(_as_written(v) for v in value)
    return value


def _column_key(name) -> str:
    return str(name).strip().lstrip("#").strip().lower()


class LabelledVariants:
    """The alleles of a VCF/BCF/TSV with the requested columns: :attr:`table` has ``line`` (where the record is,
    for messages), ``record``, ``allele``, ``chrom``, ``pos``, ``ref``, ``alt``, ``kind`` and for each requested
    name a column ``value:NAME`` holding the raw values (strings, numbers, booleans or None); :attr:`alleles` the same rows
    as :class:`~genossm.data.variants.Allele` objects (the units ``score-variants`` scores)."""

    def __init__(self, path: str | Path, columns: Sequence[str]):
        self.path = Path(path)
        self.reader = VariantReader(self.path)
        self.columns = list(dict.fromkeys(c for c in columns if c))
        self.table = self._vcf() if self.reader.format != "tsv" else self._tsv()

    def where(self, row: int) -> str:
        """``path: line N`` of row ``row`` of :attr:`table` (``record N`` where the file has no lines: BCF)."""
        line = self.table["line"].iat[row]
        return f"{self.path}: line {int(line)}" if line == line and line is not None else \
            f"{self.path}: record {int(self.table['record'].iat[row]) + 1}"

    # -- reading -----------------------------------------------------------------------------------
    def _rows(self, items) -> pd.DataFrame:
        """``items``: (record, {column: its value in the file}) in input order."""
        numbering = AlleleNumbering()
        rows = []
        self.alleles = []
        for rec, raw in items:
            alleles = numbering(rec)
            self.alleles += alleles
            values = {c: self._per_allele(raw[c], len(rec.alts), rec, c) for c in self.columns}
            for i, a in enumerate(alleles):
                row = {"line": rec.line if rec.line is not None else math.nan, "record": rec.index,
                       "allele": a.allele, "chrom": a.chrom, "pos": a.pos, "ref": a.ref, "alt": a.alt,
                       "kind": variant_kind(a.ref, a.alt)}
                row.update({VALUE + c: v[i] if i < len(v) else v[-1] for c, v in values.items()})
                rows.append(row)
        return pd.DataFrame(rows, columns=["line", "record", "allele", "chrom", "pos", "ref", "alt", "kind",
                                           *(VALUE + c for c in self.columns)])

    def _per_allele(self, value, n_alts: int, rec: VariantRecord, column: str) -> list:
        if isinstance(value, tuple):
            items = list(value)
        elif isinstance(value, str) and "," in value and n_alts > 1:
            items = [v.strip() for v in value.split(",")]
        else:
            return [value]
        if len(items) == n_alts + 1 and n_alts:  # Number=R: the REF's value first
            items = items[1:]
        if len(items) == 1 or len(items) == max(n_alts, 1):
            return items
        where = f"line {rec.line}" if rec.line is not None else f"record {rec.index + 1}"
        raise GenossmError(f"{self.path}: {where}: {column} has {len(items)} values for {n_alts} ALT allele(s) "
                           f"({rec.chrom}:{rec.pos}); give one value, or one per ALT")

    def _vcf(self) -> pd.DataFrame:
        header = self.reader.complete_header()
        for column in self.columns:
            if column not in header.info:
                declared = ", ".join(list(header.info)[:20]) or "none"
                raise GenossmError(f"{self.path}: line 1: no INFO field {column!r} in the header or the records "
                                   f"(INFO fields: {declared})")
        flags = {c for c in self.columns if header.info[c].type == "Flag"}

        def items():
            for rec, prec in self.reader.pysam_records():
                yield rec, {c: (c in prec.info) if c in flags else _as_written(prec.info.get(c)) for c in self.columns}

        return self._rows(items())

    def _tsv(self) -> pd.DataFrame:
        records = list(self.reader)  # checks chrom, pos, ref, alt line by line
        try:
            raw = pd.read_csv(self.path, sep="\t", dtype=str, keep_default_na=False, skip_blank_lines=False,
                              quoting=csv.QUOTE_NONE,
                              compression="gzip" if self.reader.compression != "none" else None)
        except (pd.errors.ParserError, UnicodeDecodeError) as err:
            raise GenossmError(f"{self.path}: malformed TSV ({err})") from None
        keys = {}
        for name in raw.columns:
            keys.setdefault(_column_key(name), name)
        for column in self.columns:
            if _column_key(column) not in keys:
                raise GenossmError(f"{self.path}: line 1: no column {column!r} (columns: "
                                   f"{' | '.join(map(str, raw.columns))[:200]})")
        cells = {c: raw[keys[_column_key(c)]].to_numpy() for c in self.columns}
        return self._rows((rec, {c: cells[c][rec.index] for c in self.columns}) for rec in records)

    # -- parsing the values ------------------------------------------------------------------------
    def numbers(self, column: str, what: str, allow_missing: bool) -> np.ndarray:
        """``column`` as floats (true/false read as 1/0); a missing value is NaN where ``allow_missing``, else
        an error naming the line, as is a value that is not a number."""
        out = np.empty(len(self.table))
        for i, v in enumerate(self.table[VALUE + column].tolist()):
            out[i] = self._number(v, i, column, what, allow_missing)
        return out

    def _number(self, v, row: int, column: str, what: str, allow_missing: bool) -> float:
        if isinstance(v, (bool, np.bool_)):
            return float(v)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            text = ""
        elif isinstance(v, (int, float, np.integer, np.floating)):
            return float(v)
        else:
            text = str(v).strip()
        low = text.lower()
        if low in MISSING:
            if allow_missing:
                return math.nan
            a = self.table.iloc[row]
            raise GenossmError(f"{self.where(row)}: no {what} ({column} is {repr(text) if text else 'empty'}) for "
                               f"{a.chrom}:{a.pos} {a.ref}>{a.alt}; every variant needs one")
        if low in TRUE:
            return 1.0
        if low in FALSE:
            return 0.0
        try:
            value = float(text)
        except ValueError:
            raise GenossmError(f"{self.where(row)}: {what} {text!r} (column {column}) is not a number") from None
        if not math.isfinite(value):
            raise GenossmError(f"{self.where(row)}: {what} {text!r} (column {column}) is not a finite number")
        return value

    def strings(self, column: str) -> np.ndarray:
        """``column`` as text, a missing value as ``"."``."""
        values = []
        for v in self.table[VALUE + column].tolist():
            text = "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v).strip()
            values.append(text if text else ".")
        return np.asarray(values, dtype=object)

    def keys(self) -> list[tuple]:
        """The allele of each row as a join key: (contig alias key, position, REF, ALT)."""
        t = self.table
        return [(canonical_contig(str(c)), int(p), str(r).upper(), str(a).upper())
                for c, p, r, a in zip(t["chrom"], t["pos"], t["ref"], t["alt"])]


def read_scored(path: str | Path, scores: Sequence[str] = ("llr", "emb_dist")) -> tuple[pd.DataFrame, str]:
    """The scores of an earlier ``score-variants`` run: its table (``.tsv``, ``.tsv.gz``, ``.parquet``) or its
    VCF (INFO ``GENOSSM_LLR``, ``GENOSSM_EMB_DIST``). Returns (one row per allele: ``key``, ``where`` and the
    ``scores`` as floats, NaN where the allele has none; the file's name for messages)."""
    path = Path(path)
    if not path.is_file():
        raise GenossmError(f"scored={path}: file not found (a table or VCF written by genossm score-variants)")
    if path.name.lower().endswith((".parquet", ".pq")):
        try:
            df = pd.read_parquet(path)
        except Exception as err:  # noqa: BLE001 - pyarrow raises many kinds for a broken file
            raise GenossmError(f"{path}: cannot read as parquet ({err})") from None
        df.columns = [_column_key(c) for c in df.columns]
        missing = [c for c in ("chrom", "pos", "ref", "alt", *scores) if c not in df.columns]
        if missing:
            raise GenossmError(f"{path}: not a score-variants table: no column {', '.join(missing)}")
        out = pd.DataFrame({
            "key": [(canonical_contig(str(c)), int(p), str(r).upper(), str(a).upper())
                    for c, p, r, a in zip(df["chrom"], df["pos"], df["ref"], df["alt"])],
            "where": [f"{path}: row {i + 1}" for i in range(len(df))],
        })
        for s in scores:
            out[s] = pd.to_numeric(df[s], errors="coerce").to_numpy(dtype=float)
        return out, str(path)
    reader = VariantReader(path)
    columns = [f"GENOSSM_{s.upper()}" for s in scores] if reader.format != "tsv" else list(scores)
    scored = LabelledVariants(path, columns)
    out = pd.DataFrame({"key": scored.keys(), "where": [scored.where(i) for i in range(len(scored.table))]})
    for s, column in zip(scores, columns):
        out[s] = scored.numbers(column, f"score {s}", allow_missing=True)
    return out, str(path)


def join_scores(labelled: LabelledVariants, scored: pd.DataFrame, scored_name: str,
                scores: Sequence[str] = ("llr", "emb_dist")) -> dict[str, np.ndarray]:
    """The scores of each labelled allele, found by contig (aliases), position, REF and ALT. An allele scored
    twice with different values, or a labelled allele without a row in the scored file, stops with a message
    naming the lines."""
    found: dict[tuple, int] = {}
    for i, key in enumerate(scored["key"]):
        j = found.setdefault(key, i)
        if j != i:
            a, b = scored.iloc[j], scored.iloc[i]
            if any(not (a[s] == b[s] or (a[s] != a[s] and b[s] != b[s])) for s in scores):
                raise GenossmError(f"{b['where']}: {key[0]}:{key[1]} {key[2]}>{key[3]} is scored twice with different "
                                   f"values (first at {a['where']}); scores and labels cannot be joined")
    keys = labelled.keys()
    rows = [found.get(k, -1) for k in keys]
    missing = [i for i, r in enumerate(rows) if r < 0]
    if missing:
        k = keys[missing[0]]
        more = f" (and {len(missing) - 1:,} more of the {len(keys):,} labelled alleles)" if len(missing) > 1 else ""
        raise GenossmError(f"{labelled.where(missing[0])}: {k[0]}:{k[1]} {k[2]}>{k[3]} has no score in {scored_name}"
                           f"{more}: scores and labels do not join; score this file with score-variants, or give "
                           "pretrained= instead of scored= to score it now")
    rows = np.asarray(rows, dtype=np.int64)
    return {s: scored[s].to_numpy(dtype=float)[rows] if len(rows) else np.zeros(0) for s in scores}
