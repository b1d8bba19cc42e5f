"""What ``genossm score-variants`` writes: the input VCF with genossm's INFO fields, the allele table, the
ref/alt embeddings, and the run's summary; :func:`write_scored_variants` merges the score shards back into
the input, in input order. Every file is written to a temporary name and renamed when complete."""

from __future__ import annotations

import contextlib
import gzip
import io
import logging
import math
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pysam

from genossm.atomic import atomic_path
from genossm.data.variants import (REASON_CODES, REASONS, Allele, AlleleNumbering, VariantRecord, quiet_htslib,
                                   window_needed)
from genossm.errors import GenossmError
from genossm.tasks.callbacks import merged_embeddings, merged_scores
from genossm.tasks.plots import draw_heatmap

log = logging.getLogger(__name__)

LLR_DESCRIPTION = (
    "genossm zero-shot log-likelihood ratio per ALT allele, natural log: log P(alt) - log P(ref), with P "
    "normalised over the four bases A, C, G, T (a softmax over the model's A/C/G/T logits only) "
    "(SNV: at the masked position; indel/MNV: pseudo-log-likelihood difference of the alt and ref windows), "
    "averaged over both strands. Negative = alt less likely than ref under the model. Missing when the allele "
    "could not be scored (see GENOSSM_SKIP)"
)
EMB_DESCRIPTION = (
    "genossm embedding distance per ALT allele between the ref and alt windows (reverse-complement-invariant "
    "embeddings); 0 = no change, larger = the alt window looks more different to the model. Missing when the "
    "allele could not be scored (see GENOSSM_SKIP)"
)
SKIP_DESCRIPTION = "Why an ALT allele has no genossm score ('.' when scored): " + "; ".join(
    f"{k} = {v}" for k, v in REASONS.items()
)

TABLE_COLUMNS = ("record", "chrom", "pos", "id", "ref", "alt", "allele", "kind", "llr", "emb_dist", "reason")


def is_vcf_path(path: str | Path) -> bool:
    return str(path).lower().endswith((".vcf", ".vcf.gz", ".vcf.bgz", ".bcf"))


def is_table_path(path: str | Path) -> bool:
    return str(path).lower().endswith((".tsv", ".tsv.gz", ".txt", ".parquet", ".pq"))


RECORD_SKIP_DESCRIPTION = (
    "Why a record has no genossm score at all when it has no ALT allele to hang a GENOSSM_SKIP value on: "
    "missing_alt = " + REASONS["missing_alt"]
)
END_DESCRIPTION = "End position of the variant described in this record (htslib writes it for symbolic alleles)"
GENOSSM_KEYS = ("GENOSSM_LLR", "GENOSSM_EMB_DIST", "GENOSSM_SKIP", "GENOSSM_RECORD_SKIP")


def _vcf_kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".bcf"):
        return "bcf"
    if name.endswith((".vcf.gz", ".vcf.bgz")):
        return "vcf.gz"
    return "vcf"


def _number(v) -> str:
    return "." if v is None or np.isnan(v) else f"{float(v):.6g}"


def with_genossm_info(line: str, fields: dict[str, str]) -> str:
    """``line`` (a VCF record's text, no line end) with genossm's INFO fields replaced by ``fields``; every
    other column and INFO entry is kept byte for byte, in its order."""
    cols = line.split("\t")
    if len(cols) < 8:
        cols += ["."] * (8 - len(cols))
    info = [] if cols[7] in ("", ".") else cols[7].split(";")
    info = [kv for kv in info if kv.split("=", 1)[0] not in GENOSSM_KEYS]
    info += [f"{k}={v}" for k, v in fields.items()]
    cols[7] = ";".join(info) or "."
    return "\t".join(cols)


class VcfOutput:
    """Write a copy of the input VCF with genossm's INFO fields, atomically (temp file, then rename).

    Each record is written as its input text with genossm's fields appended (an earlier run's replaced), so
    every other field passes through byte for byte (``AF=0.5,0.0`` stays so); the header gains genossm's
    declarations, ``##source``, ``##genossm_command`` (how the file was made) and whatever the records use
    undeclared. ``.vcf.gz`` is bgzip with a ``.tbi`` beside it (renamed in after the file, so an index never
    stands beside the wrong file); ``.bcf`` is converted by htslib. Use as a context manager; call
    :meth:`write` once per input record, in input order.
    """

    def __init__(self, path: str | Path, header: pysam.VariantHeader, command: str | None = None,
                 work_dir: str | Path | None = None):
        from genossm import __version__

        self.path = Path(path)
        self.kind = _vcf_kind(self.path)
        self.work_dir = Path(work_dir) if work_dir is not None else self.path.parent
        self.header = header.copy()
        for key, number, typ, desc in (
            ("GENOSSM_LLR", "A", "Float", LLR_DESCRIPTION),
            ("GENOSSM_EMB_DIST", "A", "Float", EMB_DESCRIPTION),
            ("GENOSSM_SKIP", "A", "String", SKIP_DESCRIPTION),
            ("GENOSSM_RECORD_SKIP", "1", "String", RECORD_SKIP_DESCRIPTION),
        ):
            if key in self.header.info:
                self.header.info.remove_header(key)
            self.header.add_line(f'##INFO=<ID={key},Number={number},Type={typ},Description="{desc}">')
        if self.kind == "bcf" and "END" not in self.header.info:
            self.header.add_line(f'##INFO=<ID=END,Number=1,Type=Integer,Description="{END_DESCRIPTION}">')
        text = str(self.header).splitlines()
        text = [line for line in text if not line.startswith(("##source=genossm", "##genossm_command="))]
        extra = [f"##source=genossm {__version__}"] + ([f"##genossm_command={command}"] if command else [])
        self.header_text = "\n".join(text[:-1] + extra + text[-1:]) + "\n"
        self._ctx = None
        self._fh = None

    def __enter__(self):
        suffix = {"bcf": ".bcf", "vcf.gz": ".vcf.gz", "vcf": ".vcf"}[self.kind]
        self._ctx = atomic_path(self.path, suffix)
        self._tmp = self._ctx.__enter__()
        if self.kind == "vcf.gz":
            self._fh = pysam.BGZFile(str(self._tmp), "wb")
        elif self.kind == "bcf":
            self._text = self.work_dir / "scored.vcf"
            self._text.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self._text, "wb")
        else:
            self._fh = open(self._tmp, "wb")
        self._fh.write(self.header_text.encode("utf-8", errors="surrogateescape"))
        return self

    def __exit__(self, *exc):
        index = None
        try:
            self._fh.close()
            if exc[0] is None:
                if self.kind == "bcf":
                    with pysam.VariantFile(str(self._text)) as vin, \
                            pysam.VariantFile(str(self._tmp), "wb", header=vin.header) as vout:
                        for rec in vin:
                            vout.write(rec)
                    self._text.unlink()
                elif self.kind == "vcf.gz":
                    index = self._index()
        except BaseException:
            self._ctx.__exit__(*sys.exc_info())
            raise
        if exc[0] is None and self.kind == "vcf.gz":
            # no index of an earlier file may stand beside the new one, even for a moment
            for suffix in (".tbi", ".csi"):
                with contextlib.suppress(FileNotFoundError):
                    self.path.with_name(self.path.name + suffix).unlink()
        result = self._ctx.__exit__(*exc)
        if index is not None:
            final = self.path.with_name(self.path.name + ".tbi")
            os.replace(index, final)
            data_mtime = self.path.stat().st_mtime_ns
            if final.stat().st_mtime_ns < data_mtime:
                os.utime(final, ns=(data_mtime, data_mtime))
        return result

    def _index(self) -> Path | None:
        """A tabix index of the temporary file (renamed beside the output after it), or None with a warning
        when the records are not sorted (they keep the input's order)."""
        try:
            with quiet_htslib():
                pysam.tabix_index(str(self._tmp), preset="vcf", force=True)
        except (OSError, ValueError) as err:
            log.warning("%s: no .tbi index written: the records keep the input's order, which tabix cannot index "
                        "(%s); sort it with bcftools sort and index it with tabix -p vcf", self.path, err)
            with contextlib.suppress(FileNotFoundError):
                Path(str(self._tmp) + ".tbi").unlink()
            return None
        return Path(str(self._tmp) + ".tbi")

    def write(self, line: str, llr, emb_dist, reasons) -> None:
        """``line``: the record's text; ``llr``, ``emb_dist``: one float (NaN = missing) per ALT; ``reasons``:
        one str or None per ALT (a record without ALT: one allele, its reason record-level)."""
        cols = line.split("\t", 5)
        n = 0 if len(cols) < 5 or cols[4] in (".", "") else cols[4].count(",") + 1
        fields = {}
        if n:
            if any(not np.isnan(v) for v in llr[:n]):
                fields["GENOSSM_LLR"] = ",".join(_number(v) for v in llr[:n])
            if any(not np.isnan(v) for v in emb_dist[:n]):
                fields["GENOSSM_EMB_DIST"] = ",".join(_number(v) for v in emb_dist[:n])
            if any(reasons[:n]):
                fields["GENOSSM_SKIP"] = ",".join(r or "." for r in reasons[:n])
        elif reasons and reasons[0]:
            fields["GENOSSM_RECORD_SKIP"] = reasons[0]
        self._fh.write((with_genossm_info(line, fields) + "\n").encode("utf-8", errors="surrogateescape"))


class TableOutput:
    """One row per variant-allele, TSV (optionally .gz) or Parquet, written a block of rows at a time, atomically."""

    def __init__(self, path: str | Path, extra_columns: tuple[str, ...] = ()):
        self.path = Path(path)
        self.parquet = self.path.name.lower().endswith((".parquet", ".pq"))
        self.columns = TABLE_COLUMNS + tuple(extra_columns)
        self._ctx = None
        self._fh = None
        self._writer = None
        self._rows: list[dict] = []
        self.n_rows = 0

    def __enter__(self):
        suffix = ".parquet" if self.parquet else ""
        self._ctx = atomic_path(self.path, suffix)
        self._tmp = self._ctx.__enter__()
        if not self.parquet:
            raw = open(self._tmp, "wb")
            self._fh = gzip.GzipFile(fileobj=raw, mode="wb") if self.path.name.endswith(".gz") else raw
            self._raw = raw
            self._fh.write(("\t".join(self.columns) + "\n").encode())
        return self

    def add(self, row: dict) -> None:
        self._rows.append(row)
        if len(self._rows) >= 10_000:
            self.flush()

    def _frame(self) -> pd.DataFrame:
        df = pd.DataFrame(self._rows, columns=list(self.columns))
        for col in ("record", "pos", "allele"):
            df[col] = df[col].astype("int64")
        for col in ("llr", "emb_dist"):
            df[col] = df[col].astype("float64")
        return df

    def _schema(self):
        """Fixed column types, so a block of rows whose ``id`` or ``reason`` is all null still writes strings (nulls)."""
        import pyarrow as pa

        types = {"record": pa.int64(), "pos": pa.int64(), "allele": pa.int64(), "llr": pa.float64(),
                 "emb_dist": pa.float64()}
        return pa.schema([(c, types.get(c, pa.string())) for c in self.columns])

    def flush(self) -> None:
        if not self._rows:
            return
        df = self._frame()
        self.n_rows += len(df)
        self._rows = []
        if self.parquet:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(df, schema=self._schema(), preserve_index=False)
            if self._writer is None:
                self._writer = pq.ParquetWriter(str(self._tmp), table.schema)
            self._writer.write_table(table.cast(self._writer.schema))
        else:
            buf = io.StringIO()
            df.to_csv(buf, sep="\t", header=False, index=False, na_rep="", float_format="%.6g")
            self._fh.write(buf.getvalue().encode())

    def __exit__(self, *exc):
        try:
            if exc[0] is None:
                self.flush()
                if self.parquet and self._writer is None:  # no rows: still a valid, empty table
                    import pyarrow as pa
                    import pyarrow.parquet as pq

                    pq.write_table(pa.Table.from_pandas(self._frame(), schema=self._schema(), preserve_index=False),
                                   str(self._tmp))
        finally:
            if self._writer is not None:
                self._writer.close()
            if self._fh is not None:
                self._fh.close()
                if self._fh is not self._raw:
                    self._raw.close()
        return self._ctx.__exit__(*exc)


class EmbeddingOutput:
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


def rate(n: float, seconds: float) -> str:
    """``n / seconds`` with the precision it deserves: 1,234 / 56.7 / 0.43 / 0.0021 (never a bare 0)."""
    value = n / max(seconds, 1e-9)
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value == 0:
        return "0"
    return f"{value:.2g}"


@dataclass
class Summary:
    records: int = 0
    alleles: int = 0
    scored: Counter = field(default_factory=Counter)  # kind -> n
    skipped: Counter = field(default_factory=Counter)  # reason -> n
    seconds: float = 0.0
    window_needed: int = 0  # the window_len that would fit every allele_exceeds_window allele
    notes: list = field(default_factory=list)  # lines said after the counts (e.g. why the result is empty)

    def text(self) -> str:
        scored = sum(self.scored.values())
        lines = [f"{self.records:,} records, {self.alleles:,} alleles: {scored:,} scored"
                 + (f" ({', '.join(f'{k} {v:,}' for k, v in sorted(self.scored.items()))})" if scored else "")
                 + (f" in {self.seconds:.1f} s ({rate(self.alleles, self.seconds)} alleles/s)" if self.seconds else "")]
        for reason, n in sorted(self.skipped.items()):
            lines.append(f"  not scored, {reason}: {n:,}"
                         + (f" (window_len={self.window_needed:,} or more would score them)"
                            if reason == "allele_exceeds_window" and self.window_needed else ""))
        lines += [f"  {note}" for note in self.notes]
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {"records": self.records, "alleles": self.alleles, "scored": dict(self.scored),
                "skipped": dict(self.skipped), "seconds": self.seconds, "window_needed": self.window_needed,
                "notes": list(self.notes)}


def table_path(output: Path, table: str | None) -> Path | None:
    if table:
        return Path(table)
    if is_table_path(output):
        return output
    name = output.name
    for ext in (".vcf.gz", ".vcf.bgz", ".vcf", ".bcf"):
        if name.lower().endswith(ext):
            return output.with_name(name[: -len(ext)] + ".tsv")
    return output.with_name(name + ".tsv")


class ScoredAllele(NamedTuple):
    allele: Allele
    llr: float
    emb_dist: float
    reason: str | None

    def table_row(self) -> dict:
        a = self.allele
        return {"record": a.record, "chrom": a.chrom, "pos": a.pos, "id": a.id or None, "ref": a.ref, "alt": a.alt,
                "allele": a.allele, "kind": a.kind, "llr": self.llr, "emb_dist": self.emb_dist,
                "reason": self.reason or None}


def write_scored_variants(parts, output, table, reader, records, heatmap, embeddings, dim, scan,
                          indel_flank: int = 0, command: str | None = None) -> Summary:
    """Read the input again, in order, beside the merged scores (the same allele numbering as the batches),
    and write every output atomically."""
    summary = Summary()
    scores = merged_scores(parts)
    table_file = table_path(output, table)
    emb_rows = merged_embeddings(parts, dim) if embeddings is not None else None
    heat = [] if scan == "saturation" else None
    heat_contig: list[str] = []  # a saturation region is on one contig
    numbering = AlleleNumbering()

    def scored(rec: VariantRecord) -> list[ScoredAllele]:
        out = []
        for a in numbering(rec):
            s = next(scores)
            reason = REASON_CODES[int(s["reason"])] or None
            llr, emb_dist = float(s["llr"]), float(s["emb_dist"])
            if reason is None and not math.isfinite(llr):  # never written, nor counted, as a score
                reason, llr, emb_dist = "non_finite_score", math.nan, math.nan
            if not math.isfinite(emb_dist):
                emb_dist = math.nan
            out.append(ScoredAllele(a, llr, emb_dist, reason))
            summary.alleles += 1
            if reason:
                summary.skipped[reason] += 1
                if reason == "allele_exceeds_window":
                    summary.window_needed = max(summary.window_needed, window_needed(a, indel_flank))
            else:
                summary.scored[a.kind] += 1
        summary.records += 1
        return out

    with contextlib.ExitStack() as stack:
        tab = stack.enter_context(TableOutput(table_file))
        emb_out = stack.enter_context(EmbeddingOutput(embeddings, dim)) if embeddings is not None else None

        def add(row: ScoredAllele) -> None:
            tab.add(row.table_row())
            if emb_out is not None:
                emb_out.add(row.allele, next(emb_rows))

        if is_vcf_path(output):
            with VcfOutput(output, reader.complete_header(), command, work_dir=parts) as vcf:
                for rec, _, line in reader.records_with_text():
                    rows = scored(rec)
                    vcf.write(line, [r.llr for r in rows], [r.emb_dist for r in rows], [r.reason for r in rows])
                    for row in rows:
                        add(row)
        else:
            for rec in records():
                for row in scored(rec):
                    add(row)
                    if heat is not None:
                        heat.append((row.allele.pos, row.allele.ref, row.allele.alt, row.llr))
                        heat_contig[:] = [row.allele.chrom]
        if next(scores, None) is not None:
            raise RuntimeError("more scores than input alleles: the input changed while it was being scored")
    if heat is not None:
        draw_heatmap(heat, heatmap or table_file.with_suffix(".png"), contig=heat_contig[0] if heat_contig else None)
    return summary
