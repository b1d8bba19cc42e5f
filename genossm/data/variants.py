"""Variant input: VCF/BCF (pysam) and TSV records, their alleles, and the reasons an allele cannot be scored.

Reading streams record by record, so a VCF of any size is read in bounded memory. Every record becomes
one :class:`VariantRecord` (1-based ``pos`` as in the file) and every ALT allele of it one
:class:`Allele` (0-based ``start`` inside the code). Alleles that cannot be scored are never dropped:
:func:`check_alleles` gives each a ``reason`` (see :data:`REASONS`), which the writers
(:mod:`genossm.tasks.outputs`) carry to the output.

Input formats, recognised from the file's content (not its name):

* VCF, plain text, bgzip or plain gzip; BCF. ``region="20:1,000-2,000"`` restricts a bgzip/BCF file that
  has a ``.tbi``/``.csi`` index to that region (contig names matched through the ``chr`` aliases).
* TSV (plain or gzip) with a header line naming at least ``chrom``, ``pos`` (1-based), ``ref``, ``alt``
  (optional ``id``); several ALT alleles may be given comma-separated.

A broken file raises :class:`~genossm.errors.GenossmError` naming the file and the line.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pandas as pd
import pysam

from genossm.data.compressed import open_decompressed, read_head, sniff_compression
from genossm.data.genome import resolve_contig
from genossm.deprecation import renamed_keywords
from genossm.errors import GenossmError

log = logging.getLogger(__name__)

# Why an allele has no score. The keys are written to the output (VCF INFO GENOSSM_SKIP, table column
# `reason`); the values document them (VCF header, README).
REASONS: dict[str, str] = {
    "missing_alt": "ALT is '.' (no alternative allele)",
    "symbolic_allele": "ALT is symbolic (<DEL>, <*>, a breakend) or the spanning deletion '*'",
    "non_acgt_allele": "REF or ALT holds a letter other than A, C, G, T",
    "contig_absent": "the contig is not in the FASTA (chr/MT aliases tried)",
    "beyond_contig_end": "REF reaches past the end of the contig in the FASTA",
    "ref_mismatch": "REF differs from the FASTA at that position",
    "position_zero": "POS is 0 (VCF's telomere position, before the contig's first base): no base to score",
    # new reasons go at the end: the codes of the earlier ones are stored in score shards and must not move
    "allele_exceeds_window": "REF or ALT plus indel_flank bases on each side is longer than window_len: "
    "a larger window_len scores it (the run's summary gives the window needed)",
    "non_finite_score": "the model's score is not a finite number (NaN or infinite): the model's weights or "
    "outputs are not finite",
}
REASON_CODES: tuple[str, ...] = ("",) + tuple(REASONS)  # 0 = scored

_ACGT = re.compile(r"^[ACGTacgt]+$")
_REGION = re.compile(r"^(?P<contig>[^:\s]+?)(?::(?P<start>[\d,_]+)(?:-(?P<end>[\d,_]+))?)?$")


@dataclass(frozen=True)
class VariantRecord:
    """One input record (a VCF line or a TSV row), as written in the file."""

    index: int  # 0-based record number in input order
    line: int | None  # 1-based line in a text file, None for BCF/region queries
    chrom: str
    pos: int  # 1-based, as in VCF
    id: str | None
    ref: str
    alts: tuple[str, ...]  # empty when ALT is '.'


@dataclass
class Allele:
    """One ALT allele of a record: the unit that gets a score (or a reason for having none)."""

    index: int  # global 0-based ordinal over all alleles of the input, in input order
    record: int  # VariantRecord.index
    allele: int  # 1-based ALT number inside the record (0 for a record without ALT)
    chrom: str  # as in the input
    pos: int  # 1-based
    id: str | None
    ref: str
    alt: str
    kind: str  # snv | mnv | indel | symbolic | missing
    contig: str | None = None  # the FASTA's own contig name, once resolved
    reason: str | None = None  # None when scorable, else a key of REASONS

    @property
    def start(self) -> int:
        """0-based start of REF on the contig."""
        return self.pos - 1


def allele_kind(ref: str, alt: str | None) -> str:
    if alt is None or alt == ".":
        return "missing"
    if alt == "*" or alt.startswith("<") or "[" in alt or "]" in alt:
        return "symbolic"
    if len(ref) == len(alt):
        return "snv" if len(ref) == 1 else "mnv"
    return "indel"


def record_alleles(record: VariantRecord, first_index: int) -> list[Allele]:
    """The alleles of a record (one per ALT; one 'missing' allele for ALT '.'), before any FASTA check."""
    alts = record.alts or (".",)
    out = []
    for i, alt in enumerate(alts):
        kind = allele_kind(record.ref, alt)
        reason = None
        if kind == "missing":
            reason = "missing_alt"
        elif kind == "symbolic":
            reason = "symbolic_allele"
        elif not (_ACGT.match(record.ref) and _ACGT.match(alt)):
            reason = "non_acgt_allele"
        out.append(Allele(
            index=first_index + i, record=record.index, allele=i + 1 if record.alts else 0,
            chrom=record.chrom, pos=record.pos, id=record.id, ref=record.ref.upper(), alt=alt.upper(),
            kind=kind, reason=reason,
        ))
    return out


def window_needed(allele: Allele, indel_flank: int) -> int:
    """The shortest ``window_len`` that holds the allele's REF and ALT with ``indel_flank`` bases each side
    (an SNV's score reads one masked position: it needs no flank)."""
    if allele.kind == "snv":
        return 1
    return max(len(allele.ref), len(allele.alt)) + 2 * int(indel_flank)


def check_alleles(alleles: list[Allele], genome, window_len: int | None = None, indel_flank: int = 0) -> list[Allele]:
    """Resolve each allele's contig in ``genome`` and set ``reason`` when it cannot be scored.

    ``genome`` is a :class:`genossm.data.genome.Genome` (``resolve``, ``lengths``, ``fetch``). Never raises
    for a variant that does not fit the genome: the reason says why. With ``window_len``, an allele whose REF
    or ALT (plus ``indel_flank`` bases each side) does not fit in the window is ``allele_exceeds_window``.
    """
    ref_cache: dict[tuple, str] = {}
    for a in alleles:
        if a.reason is not None:
            continue
        try:
            a.contig = genome.resolve(a.chrom)
        except GenossmError:
            a.reason = "contig_absent"
            continue
        length = genome.lengths[a.contig]
        end = a.start + len(a.ref)
        if a.pos == 0:
            a.reason = "position_zero"
            continue
        if a.start < 0 or end > length:
            a.reason = "beyond_contig_end"
            continue
        key = (a.contig, a.start, end)
        if key not in ref_cache:
            ref_cache[key] = genome.fetch(a.contig, a.start, end).upper()
        if ref_cache[key] != a.ref:
            a.reason = "ref_mismatch"
        elif window_len is not None and window_needed(a, indel_flank) > window_len:
            a.reason = "allele_exceeds_window"
    return alleles


def parse_region(region: str) -> tuple[str, int | None, int | None]:
    """``"20:1,001-2,000"`` (1-based, inclusive, as samtools) -> ``("20", 1000, 2000)`` 0-based half-open."""
    m = _REGION.match(str(region).strip())
    if not m:
        raise GenossmError(f"region {region!r} is not CHROM, CHROM:START or CHROM:START-END (1-based, inclusive)")
    contig = m["contig"]
    start = int(m["start"].replace(",", "").replace("_", "")) - 1 if m["start"] else None
    end = int(m["end"].replace(",", "").replace("_", "")) if m["end"] else None
    if start is not None and start < 0:
        raise GenossmError(f"region {region!r}: positions are 1-based, START must be at least 1")
    if start is not None and end is not None and end <= start:
        raise GenossmError(f"region {region!r}: END must not be before START")
    return contig, start, end


# --------------------------------------------------------------------------------------------------
# reading


def sniff(path: str | Path) -> tuple[str, str]:
    """``(format, compression)``: format ``vcf`` | ``bcf`` | ``tsv``; compression ``none`` | ``gzip`` | ``bgzf``."""
    path = Path(path)
    if not path.is_file():
        raise GenossmError(f"{path}: variants file not found")
    head = read_head(path)
    if not head:
        raise GenossmError(f"{path}: the variants file is empty")
    compression = sniff_compression(head)
    data = head
    if compression != "none":
        try:
            with open_decompressed(path, compressed=True) as g:
                data = g.read(64)
        except (OSError, EOFError) as err:
            raise GenossmError(f"{path}: cannot decompress ({err})") from None
    if data.startswith(b"BCF"):
        return "bcf", compression
    if data.startswith(b"##fileformat=VCF"):
        return "vcf", compression
    return "tsv", compression


@dataclass(frozen=True)
class Survey:
    """What one pass over a variants file found (:meth:`VariantReader.survey`)."""

    records: int
    alleles: int
    header: pysam.VariantHeader | None  # the header completed with what records use undeclared (VCF/BCF)


@contextlib.contextmanager
def quiet_htslib():
    """htslib's warnings off (its errors still show): it repeats each undeclared contig or key on every pass
    over a file, and :meth:`VariantReader.survey` says it once instead."""
    before = pysam.set_verbosity(1)
    try:
        yield
    finally:
        pysam.set_verbosity(before)


_CONTIG_LINE = re.compile(rb"##contig=<(?:.*,)?ID=([^,>]+)")


class VariantReader:
    """Stream the records of a VCF/BCF/TSV file in input order.

    ``for rec in reader`` yields :class:`VariantRecord`; :meth:`pysam_records` yields ``(VariantRecord,
    pysam.VariantRecord)`` pairs for writing a VCF that keeps every original field. ``header`` is the
    pysam header (``None`` for TSV).
    """

    TSV_REQUIRED = ("chrom", "pos", "ref", "alt")

    @renamed_keywords(chunk_rows="rows_per_read")
    def __init__(self, path: str | Path, region: str | None = None, rows_per_read: int = 50_000):
        self.path = Path(path)
        self.region = region
        self.rows_per_read = rows_per_read  # TSV rows pandas reads at a time
        self.format, self.compression = sniff(self.path)
        self.header: pysam.VariantHeader | None = None
        self._survey: Survey | None = None
        if self.format == "tsv" and region:
            raise GenossmError(f"{self.path}: region= is supported for indexed VCF/BCF files, not for a TSV")
        if self.format != "tsv":
            vf, _ = self._open_vcf()
            self.header = vf.header.copy()
            try:
                if region:
                    self._check_region()
                    self._fetch(vf)
            finally:
                vf.close()

    # -- VCF/BCF -----------------------------------------------------------------------------------
    def _open_vcf(self):
        handle = None
        try:
            if self.compression == "gzip":
                # htslib cannot seek in plain gzip; reading through a Python stream works
                handle = open_decompressed(self.path, compressed=True)
                vf = pysam.VariantFile(handle)
            else:
                vf = pysam.VariantFile(str(self.path))
        except (ValueError, OSError) as err:
            if handle is not None:
                handle.close()
            raise GenossmError(f"{self.path}: cannot read as VCF/BCF ({err})") from None
        return vf, handle

    def _column_counts(self) -> Iterator[int]:
        """Tab-separated column count of each record line of a text VCF, in file order (htslib silently drops
        sample columns beyond the header's)."""
        with open_decompressed(self.path, self.compression != "none") as fh:
            for line in fh:
                if not line.startswith(b"#"):
                    yield line.count(b"\t") + 1

    def _header_lines(self) -> int | None:
        if self.format != "vcf":
            return None
        n = 0
        with open_decompressed(self.path, self.compression != "none") as fh:
            for line in fh:
                if not line.startswith(b"#"):
                    break
                n += 1
        return n

    def _check_region(self) -> None:
        parse_region(self.region)
        if self.compression == "gzip":
            raise GenossmError(
                f"{self.path} is plain gzip, not bgzip, so it cannot be indexed for region={self.region}: "
                "recompress it with bgzip (zcat in.vcf.gz | bgzip > out.vcf.gz) and index it "
                "(tabix -p vcf out.vcf.gz), or leave region= out"
            )

    def _fetch(self, vf):
        contig, start, end = parse_region(self.region)
        if vf.index is None:
            kind = "plain-text VCF" if self.compression == "none" else "file"
            raise GenossmError(
                f"{self.path}: region={self.region} needs an index, and this {kind} has no .tbi/.csi index: "
                "bgzip it and run `tabix -p vcf` (or `bcftools index`), or leave region= out"
            )
        known = list(vf.index.keys()) if hasattr(vf.index, "keys") else list(vf.header.contigs)
        declared = self._declared_contigs()
        strangers = [c for c in known if c not in declared]
        if declared and strangers:
            raise GenossmError(
                f"{self._index_path()}: the index lists contig(s) {strangers[:5]} that the header of {self.path} does "
                "not declare, so it belongs to another file: delete it and re-index (tabix -p vcf, or bcftools index)"
            )
        name = self._region_contig(known, contig)
        if name is None:
            return iter(())  # no record on that contig
        return self._checked_fetch(vf, name, start, end)

    def _region_contig(self, known, contig: str) -> str | None:
        try:
            return resolve_contig(known, contig, str(self.path))
        except GenossmError:
            return None

    def region_contig(self) -> str | None:
        """The file's own name of ``region``'s contig (aliases tried), or None when neither its header nor its
        index knows that contig (a region query then has no record)."""
        if not self.region or self.format == "tsv":
            return None
        contig = parse_region(self.region)[0]
        vf, handle = self._open_vcf()
        try:
            known = set(vf.header.contigs)
            if vf.index is not None and hasattr(vf.index, "keys"):
                known |= set(vf.index.keys())
            return self._region_contig(sorted(known), contig)
        finally:
            vf.close()
            if handle is not None:
                handle.close()

    def _declared_contigs(self) -> list[str]:
        """The ``##contig`` IDs the VCF's own header text declares (pysam's header also holds the index's
        contigs, so it cannot tell an index made for another file); empty for BCF and contig-less headers."""
        if self.format != "vcf":
            return []
        names = []
        with open_decompressed(self.path, self.compression != "none") as fh:
            for line in fh:
                if not line.startswith(b"#"):
                    break
                match = _CONTIG_LINE.match(line)
                if match:
                    names.append(match.group(1).decode("ascii", errors="replace"))
        return names

    def _index_path(self) -> Path:
        for suffix in (".tbi", ".csi"):
            candidate = self.path.with_name(self.path.name + suffix)
            if candidate.exists():
                return candidate
        return self.path.with_name(self.path.name + ".tbi/.csi")

    def _checked_fetch(self, vf, name: str, start, end) -> Iterator:
        """Records of the region through the index. An index made for another version of the file (newer than
        it, so htslib does not complain) points at the wrong bytes: a region then comes back empty, or htslib
        reads from the middle of a record. So an empty answer is confirmed by reading the file without its
        index (the cost falls only on regions with no record), and an unreadable one names the index too."""
        count = 0
        try:
            for rec in vf.fetch(name, start, end):
                if rec.chrom != name:
                    raise self._foreign_index(f"a fetch of {name} returned a record on {rec.chrom}")
                count += 1
                yield rec
        except (OSError, ValueError) as err:
            raise GenossmError(
                f"{self.path}: region={self.region}: malformed VCF record after record {count} of the region "
                f"(htslib: {err}); either the file is damaged or its index {self._index_path()} was made for "
                "another version of it (delete the index and re-index with tabix -p vcf, or bcftools index)"
            ) from None
        if count == 0:
            lo, hi = start or 0, end if end is not None else float("inf")
            scan, handle = self._open_vcf()
            try:
                for rec in scan:
                    if rec.chrom == name and rec.start < hi and rec.stop > lo:
                        raise self._foreign_index(
                            f"the region holds records, e.g. {rec.chrom}:{rec.pos}, but the index finds none")
            finally:
                scan.close()
                if handle is not None:
                    handle.close()

    def _foreign_index(self, why: str) -> GenossmError:
        return GenossmError(
            f"{self._index_path()}: this index does not match {self.path} ({why}); it was probably made for another "
            "version of the file: delete it and re-index (tabix -p vcf, or bcftools index)"
        )

    def survey(self) -> "Survey":
        """One pass over the records (the region's, with ``region=``): how many records and ALT alleles there
        are (the progress bar's total), and the header completed with what the records use undeclared.

        htslib adds the contigs, INFO/FORMAT keys and FILTERs that records use without declaring them, and a
        VCF writer needs them declared; htslib's own warnings about them (one per pass over the file, with
        advice that does not apply) are replaced by one line here. The result is kept: later calls are free."""
        if self._survey is not None:
            return self._survey
        records = alleles = 0
        if self.format == "tsv":
            for rec in self._tsv_records():
                records += 1
                alleles += max(len(rec.alts), 1)
            self._survey = Survey(records, alleles, None)
            return self._survey
        vf, handle = self._open_vcf()
        try:
            with quiet_htslib():
                it = self._fetch(vf) if self.region else iter(vf)
                for rec in it:
                    records += 1
                    alleles += max(len(rec.alts or ()), 1)
            header = vf.header.copy()
        except (OSError, ValueError) as err:
            raise GenossmError(f"{self.path}: malformed VCF record (htslib: {err})") from None
        finally:
            vf.close()
            if handle is not None:
                handle.close()
        before, after = self.declared(), self.declared(header)
        kinds = ("contig", "INFO", "FORMAT", "FILTER")
        missing = [f"{kind} {', '.join(sorted(a - b))}" for kind, a, b in zip(kinds, after, before) if a - b]
        if missing:
            keys = any(a - b for a, b in zip(after[1:3], before[1:3]))
            log.warning("%s: the header does not declare %s (used by its records); a scored VCF declares them%s",
                        self.path, "; ".join(missing), " (INFO/FORMAT keys as htslib reads them: Number=1, Type=String)"
                        if keys else "")
        self._survey = Survey(records, alleles, header)
        return self._survey

    def complete_header(self) -> pysam.VariantHeader:
        """The header after reading every record (see :meth:`survey`)."""
        return self.survey().header

    def declared(self, header: pysam.VariantHeader | None = None) -> tuple:
        h = header if header is not None else self.header
        return tuple(frozenset(x) for x in (h.contigs, h.info, h.formats, h.filters))

    def _raw_lines(self) -> Iterator[str] | None:
        """The record lines of a text VCF as written in the file (a region's through the tabix index), in the
        order pysam reads its records; None for BCF."""
        if self.format != "vcf":
            return None
        if self.region:
            contig, start, end = parse_region(self.region)
            with pysam.VariantFile(str(self.path)) as vf:
                known = list(vf.index.keys()) if vf.index is not None and hasattr(vf.index, "keys") else []
            name = self._region_contig(known, contig)
            if name is None:
                return iter(())
            index = self._index_path()

            def fetched():
                with pysam.TabixFile(str(self.path), index=str(index), encoding="utf-8") as tbx:
                    yield from tbx.fetch(name, start, end)
            return fetched()

        def lines():
            with open_decompressed(self.path, self.compression != "none") as fh:
                for raw in fh:
                    if raw.startswith(b"#") or not raw.strip():
                        continue
                    yield raw.decode("utf-8", errors="surrogateescape").rstrip("\r\n")
        return lines()

    def records_with_text(self) -> Iterator[tuple[VariantRecord, pysam.VariantRecord, str]]:
        """:meth:`pysam_records` with each record's text line as in the file (``CHROM ... INFO ...``, no line
        end), so a writer can pass every field through byte for byte; for BCF, htslib's rendering of it."""
        lines = self._raw_lines()
        try:
            for rec, prec in self.pysam_records():
                line = next(lines, None) if lines is not None else None
                if line is None:
                    line = str(prec).rstrip("\n")
                else:
                    cols = line.split("\t", 2)
                    if len(cols) < 3 or cols[0] != prec.chrom or cols[1] != str(prec.pos):
                        raise RuntimeError(f"{self.path}: line text {line[:60]!r} does not match record {prec.chrom}:{prec.pos}")
                yield rec, prec, line
        finally:
            if lines is not None:
                lines.close()

    def pysam_records(self) -> Iterator[tuple[VariantRecord, pysam.VariantRecord]]:
        if self.format == "tsv":
            raise GenossmError(f"{self.path}: a TSV has no VCF records")
        vf, handle = self._open_vcf()
        header_lines = None if self.region else self._header_lines()
        widths = self._column_counts() if header_lines is not None else None
        n_columns = 8 + (1 + len(vf.header.samples) if len(vf.header.samples) else 0)
        try:
            it = self._fetch(vf) if self.region else iter(vf)
            index = 0
            previous = None
            while True:
                try:
                    with quiet_htslib():
                        rec = next(it)
                except StopIteration:
                    return
                except (OSError, ValueError) as err:
                    where = f"line {header_lines + index + 1}" if header_lines is not None else f"record {index + 1}"
                    after = f" (after {previous})" if previous else ""
                    raise GenossmError(f"{self.path}: {where}{after}: malformed VCF record (htslib: {err})") from None
                line = header_lines + index + 1 if header_lines is not None else None
                width = next(widths, None) if widths is not None else None
                if width is not None and width > n_columns:
                    raise GenossmError(
                        f"{self.path}: line {line}: {width} columns where the #CHROM header line names {n_columns} "
                        f"({len(vf.header.samples)} sample(s)); htslib would drop the extra values without a word"
                    )
                yield VariantRecord(
                    index=index, line=line, chrom=rec.chrom, pos=rec.pos, id=rec.id, ref=rec.ref or "",
                    alts=tuple(rec.alts or ()),
                ), rec
                previous = f"{rec.chrom}:{rec.pos}"
                index += 1
        finally:
            if widths is not None:
                widths.close()
            vf.close()
            if handle is not None:
                handle.close()

    # -- TSV ---------------------------------------------------------------------------------------
    def _tsv_records(self) -> Iterator[VariantRecord]:
        try:
            reader = pd.read_csv(
                self.path, sep="\t", dtype=str, chunksize=self.rows_per_read, keep_default_na=False,
                skip_blank_lines=False, quoting=csv.QUOTE_NONE, compression="gzip" if self.compression != "none" else None,
            )
            index = 0
            first = True
            for block in reader:
                if first:
                    self._check_tsv_columns(block.columns)
                    first = False
                block.columns = [self._column(c) for c in block.columns]
                yield from self._tsv_block(block, index)
                index += len(block)
            if first:
                raise GenossmError(f"{self.path}: line 1: empty TSV, expected a header with {', '.join(self.TSV_REQUIRED)}")
        except pd.errors.ParserError as err:
            raise GenossmError(f"{self.path}: malformed TSV ({err})") from None
        except pd.errors.EmptyDataError:
            raise GenossmError(f"{self.path}: line 1: empty TSV, expected a header with {', '.join(self.TSV_REQUIRED)}") from None
        except UnicodeDecodeError as err:
            raise GenossmError(f"{self.path}: not a VCF, BCF or text TSV of variants ({err})") from None

    @staticmethod
    def _column(name: str) -> str:
        return str(name).strip().lstrip("#").strip().lower()

    def _check_tsv_columns(self, columns) -> None:
        names = [self._column(c) for c in columns]
        missing = [c for c in self.TSV_REQUIRED if c not in names]
        if missing:
            raise GenossmError(
                f"{self.path}: line 1: not a VCF/BCF (no ##fileformat line) and not a TSV with columns "
                f"{', '.join(self.TSV_REQUIRED)}: missing {', '.join(missing)} (header: {' | '.join(map(str, columns))[:200]})"
            )

    def _tsv_block(self, block: pd.DataFrame, first_index: int) -> Iterator[VariantRecord]:
        has_id = "id" in block.columns
        cols = [block[c].to_numpy() for c in self.TSV_REQUIRED]
        ids = block["id"].to_numpy() if has_id else None
        for i in range(len(block)):
            line = first_index + i + 2
            chrom, pos, ref, alt = (str(c[i]).strip() for c in cols)
            for name, value in (("chrom", chrom), ("pos", pos), ("ref", ref), ("alt", alt)):
                if not value:
                    raise GenossmError(f"{self.path}: line {line}: empty value in column {name}")
            if not pos.isdigit() or int(pos) < 1:
                raise GenossmError(f"{self.path}: line {line}: pos {pos!r} is not a 1-based position (a whole number >= 1)")
            alts = () if alt == "." else tuple(a.strip() for a in alt.split(","))
            vid = str(ids[i]).strip() if has_id else ""
            yield VariantRecord(
                index=first_index + i, line=line, chrom=chrom, pos=int(pos), id=vid if vid not in ("", ".") else None,
                ref=ref, alts=alts,
            )

    def __iter__(self) -> Iterator[VariantRecord]:
        if self.format == "tsv":
            yield from self._tsv_records()
        else:
            for rec, _ in self.pysam_records():
                yield rec


class AlleleNumbering:
    """Numbers the ALT alleles of a stream of records 0, 1, 2, ... in input order: the one numbering that the
    batches sent to the model and the writers that merge the scores back share."""

    def __init__(self):
        self.count = 0

    def __call__(self, record: VariantRecord) -> list[Allele]:
        alleles = record_alleles(record, self.count)
        self.count += len(alleles)
        return alleles


def iter_alleles(records, genome=None) -> Iterator[tuple[VariantRecord, list[Allele]]]:
    """``(record, alleles)`` for each record, with global allele ordinals; checked against ``genome`` if given."""
    numbering = AlleleNumbering()
    for rec in records:
        alleles = numbering(rec)
        if genome is not None:
            check_alleles(alleles, genome)
        yield rec, alleles




