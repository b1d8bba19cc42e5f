"""What ``genossm score-variants`` writes: the input VCF with genossm's INFO fields, the allele table, the
ref/alt embeddings, and the run's summary; :func:`write_scored_variants` merges the score shards back into
the input, in input order. Every file is written to a temporary name and renamed when complete."""

from __future__ import annotations

import contextlib
import gzip
import io
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pysam

from genossm.data.variants import REASON_CODES, REASONS, Allele, AlleleNumbering, VariantRecord, window_needed
from genossm.errors import GenossmError, atomic_path
from genossm.tasks.callbacks import merged_embeddings, merged_scores
from genossm.tasks.plots import draw_heatmap


LLR_DESCRIPTION = (
    "genossm zero-shot log-likelihood ratio per ALT allele, natural log: log P(alt) - log P(ref) "
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


def _vcf_mode(path: Path) -> tuple[str, str]:
    name = path.name.lower()
    if name.endswith(".bcf"):
        return "wb", ".bcf"
    if name.endswith((".vcf.gz", ".vcf.bgz")):
        return "wz", ".vcf.gz"
    return "w", ".vcf"


class VcfOutput:
    """Write a copy of the input VCF with genossm's INFO fields, atomically (temp file, then rename).

    Use as a context manager; call :meth:`write` once per input record, in input order.
    """

    def __init__(self, path: str | Path, header: pysam.VariantHeader):
        self.path = Path(path)
        self.mode, self.suffix = _vcf_mode(self.path)
        self.header = header.copy()
        for key, number, typ, desc in (
            ("GENOSSM_LLR", "A", "Float", LLR_DESCRIPTION),
            ("GENOSSM_EMB_DIST", "A", "Float", EMB_DESCRIPTION),
            ("GENOSSM_SKIP", "A", "String", SKIP_DESCRIPTION),
        ):
            if key in self.header.info:
                self.header.info.remove_header(key)
            self.header.add_line(f'##INFO=<ID={key},Number={number},Type={typ},Description="{desc}">')
        self._ctx = None
        self._vf = None

    def __enter__(self):
        self._ctx = atomic_path(self.path, self.suffix)
        tmp = self._ctx.__enter__()
        self._vf = pysam.VariantFile(str(tmp), self.mode, header=self.header)
        return self

    def __exit__(self, *exc):
        self._vf.close()
        return self._ctx.__exit__(*exc)

    def write(self, rec: pysam.VariantRecord, llr, emb_dist, reasons) -> None:
        """``llr``, ``emb_dist``: one float (NaN = missing) per ALT; ``reasons``: one str or None per ALT."""
        rec.translate(self._vf.header)
        n = len(rec.alts or ())
        for key in ("GENOSSM_LLR", "GENOSSM_EMB_DIST", "GENOSSM_SKIP"):
            if key in rec.info:
                del rec.info[key]
        if n:
            llr = [None if v is None or np.isnan(v) else float(v) for v in llr[:n]]
            dist = [None if v is None or np.isnan(v) else float(v) for v in emb_dist[:n]]
            if any(v is not None for v in llr):
                rec.info["GENOSSM_LLR"] = llr
            if any(v is not None for v in dist):
                rec.info["GENOSSM_EMB_DIST"] = dist
            if any(reasons[:n]):
                rec.info["GENOSSM_SKIP"] = [r or "." for r in reasons[:n]]
        self._vf.write(rec)


class TableOutput:
    """One row per variant-allele, TSV (optionally .gz) or Parquet, written in chunks, atomically."""

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

    def flush(self) -> None:
        if not self._rows:
            return
        df = self._frame()
        self.n_rows += len(df)
        self._rows = []
        if self.parquet:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(df, preserve_index=False)
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

                    pq.write_table(pa.Table.from_pandas(self._frame(), preserve_index=False), str(self._tmp))
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
                 + (f" in {self.seconds:.1f} s ({self.alleles / max(self.seconds, 1e-9):,.0f} alleles/s)" if self.seconds else "")]
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
        return {"record": a.record, "chrom": a.chrom, "pos": a.pos, "id": a.id or "", "ref": a.ref, "alt": a.alt,
                "allele": a.allele, "kind": a.kind, "llr": self.llr, "emb_dist": self.emb_dist,
                "reason": self.reason or ""}


def write_scored_variants(parts, output, table, reader, records, heatmap, embeddings, dim, mode,
                          indel_flank: int = 0) -> Summary:
    """Read the input again, in order, beside the merged scores (the same allele numbering as the batches),
    and write every output atomically."""
    summary = Summary()
    scores = merged_scores(parts)
    table_file = table_path(output, table)
    emb_rows = merged_embeddings(parts, dim) if embeddings is not None else None
    heat = [] if mode == "saturation" else None
    numbering = AlleleNumbering()

    def scored(rec: VariantRecord) -> list[ScoredAllele]:
        out = []
        for a in numbering(rec):
            s = next(scores)
            reason = REASON_CODES[int(s["reason"])] or None
            out.append(ScoredAllele(a, float(s["llr"]), float(s["emb_dist"]), reason))
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
            quiet = pysam.set_verbosity(0)  # htslib already warned about undeclared keys while scoring
            try:
                reader = reader.rewritten(parts)
            finally:
                pysam.set_verbosity(quiet)
            with VcfOutput(output, reader.header) as vcf:
                for rec, prec in reader.pysam_records():
                    rows = scored(rec)
                    vcf.write(prec, [r.llr for r in rows], [r.emb_dist for r in rows], [r.reason for r in rows])
                    for row in rows:
                        add(row)
        else:
            for rec in records():
                for row in scored(rec):
                    add(row)
                    if heat is not None:
                        heat.append((row.allele.pos, row.allele.ref, row.allele.alt, row.llr))
        if next(scores, None) is not None:
            raise RuntimeError("more scores than input alleles: the input changed while it was being scored")
    if heat is not None:
        draw_heatmap(heat, heatmap or table_file.with_suffix(".png"))
    return summary
