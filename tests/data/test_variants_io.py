"""Variant input: VCF/BCF/TSV reading against pysam itself, checks against the FASTA, indexes."""

import gzip
import os
import shutil
import subprocess
import sys

import pysam
import pytest

from genossm.data.genome import Genome
from genossm.data.variants import (
    REASONS,
    VariantReader,
    check_alleles,
    iter_alleles,
    parse_region,
    record_alleles,
    sniff,
)
from genossm.errors import GenossmError

from helpers import save_tiny_model

INDELS = "variants_chr20_indels_1000g.vcf.gz"  # plain gzip, as distributed
MULTI = "variants_chr20_multiallelic.vcf"
SLICE = "variants_chr20_slice.fa.gz"

HEADER = "##fileformat=VCFv4.2\n##contig=<ID=20,length=63025520>\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"


def pysam_rows(path):
    with gzip.open(path, "rb") if str(path).endswith(".gz") else open(path, "rb") as fh:
        return [(r.chrom, r.pos, r.ref, tuple(r.alts or ())) for r in pysam.VariantFile(fh)]


def write(path, text):
    path.write_text(text)
    return path


def test_plain_gzip_vcf_matches_pysam(bundled_data):
    path = bundled_data / INDELS
    assert sniff(path) == ("vcf", "gzip")
    records = list(VariantReader(path))
    assert [(r.chrom, r.pos, r.ref, r.alts) for r in records] == pysam_rows(path)
    assert len(records) == 194 and [r.index for r in records] == list(range(194))
    # line numbers count the header: the first record is on the line after the last '#' line
    n_header = sum(1 for line in gzip.open(path, "rt") if line.startswith("#"))
    assert records[0].line == n_header + 1 and records[-1].line == n_header + 194


def test_multiallelic_record_gives_one_allele_per_alt(bundled_data):
    (rec,) = list(VariantReader(bundled_data / MULTI))
    assert (rec.chrom, rec.pos, rec.ref, rec.alts) == ("1", 1219477, "TG", ("TGG", "T"))
    alleles = record_alleles(rec, 5)
    assert [(a.index, a.allele, a.alt, a.kind) for a in alleles] == [(5, 1, "TGG", "indel"), (6, 2, "T", "indel")]


def test_bgzip_bcf_and_region_queries(tmp_path, bundled_data):
    src = tmp_path / "indels.vcf"
    with gzip.open(bundled_data / INDELS, "rb") as fh, open(src, "wb") as out:
        shutil.copyfileobj(fh, out)
    bgz = pysam.tabix_index(str(src), preset="vcf", keep_original=True)  # bgzip + .tbi
    bcf = tmp_path / "indels.bcf"
    with pysam.VariantFile(bgz) as vin, pysam.VariantFile(str(bcf), "wb", header=vin.header) as vout:
        for r in vin:
            vout.write(r)
    expected = pysam_rows(src)
    assert sniff(bgz) == ("vcf", "bgzf") and sniff(bcf)[0] == "bcf"
    for path in (src, bgz, bcf):
        assert [(r.chrom, r.pos, r.ref, r.alts) for r in VariantReader(path)] == expected
    # 1-based inclusive region, contig through its alias
    inside = [e for e in expected if 1_000_000 <= e[1] <= 3_000_000]
    assert inside
    got = [(r.chrom, r.pos, r.ref, r.alts) for r in VariantReader(bgz, region="chr20:1,000,000-3,000,000")]
    assert got == inside
    assert list(VariantReader(bgz, region="chr7:1-100")) == []


def test_region_on_unindexed_files_is_a_clear_error(tmp_path, bundled_data):
    with pytest.raises(GenossmError, match="plain gzip, not bgzip"):
        VariantReader(bundled_data / INDELS, region="20:1-100000")
    with pytest.raises(GenossmError, match="needs an index"):
        VariantReader(bundled_data / MULTI, region="1:1-100000")
    with pytest.raises(GenossmError, match="region"):
        parse_region("20:500-100")


def test_parse_region():
    assert parse_region("20:1,001-2,000") == ("20", 1000, 2000)
    assert parse_region("chrX") == ("chrX", None, None)


def test_broken_vcf_line_names_file_and_line(tmp_path):
    bad = write(tmp_path / "bad.vcf", HEADER + "20\t100\t.\tA\tC\t.\t.\t.\n20\tabc\t.\tA\tC\t.\t.\t.\n")
    with pytest.raises(GenossmError, match=r"bad\.vcf: line 5.*malformed VCF record"):
        list(VariantReader(bad))
    short = write(tmp_path / "short.vcf", HEADER + "20\t100\t.\tA\tC\t.\t.\t.\n20\t300\n")
    with pytest.raises(GenossmError, match=r"short\.vcf: line 5"):
        list(VariantReader(short))


def test_not_a_variants_file(tmp_path):
    junk = write(tmp_path / "notes.txt", "hello world\nthis is not a VCF\n")
    with pytest.raises(GenossmError, match=r"notes\.txt: line 1: not a VCF/BCF .* missing chrom, pos, ref, alt"):
        list(VariantReader(junk))
    empty = write(tmp_path / "empty.vcf", "")
    with pytest.raises(GenossmError, match="empty"):
        VariantReader(empty)


def test_tsv_input_and_its_errors(tmp_path):
    good = write(tmp_path / "v.tsv", "#chrom\tpos\tid\tref\talt\n20\t421808\trs1\tA\tACCA\n20\t421810\t.\tC\tA,G\n")
    recs = list(VariantReader(good))
    assert [(r.chrom, r.pos, r.id, r.ref, r.alts, r.line) for r in recs] == [
        ("20", 421808, "rs1", "A", ("ACCA",), 2), ("20", 421810, None, "C", ("A", "G"), 3)]
    missing = write(tmp_path / "m.tsv", "chrom\tpos\tref\n20\t5\tA\n")
    with pytest.raises(GenossmError, match=r"m\.tsv: line 1: .*missing alt"):
        list(VariantReader(missing))
    bad_pos = write(tmp_path / "p.tsv", "chrom\tpos\tref\talt\n20\t5\tA\tC\n20\tfive\tA\tC\n")
    with pytest.raises(GenossmError, match=r"p\.tsv: line 3: pos 'five'"):
        list(VariantReader(bad_pos))
    ragged = write(tmp_path / "r.tsv", "chrom\tpos\tref\talt\n20\t5\tA\tC\n20\t6\tA\tC\tX\tY\n")
    with pytest.raises(GenossmError, match=r"r\.tsv: malformed TSV .*line 3"):
        list(VariantReader(ragged))


def test_checks_against_the_fasta(tmp_path, bundled_data):
    genome = Genome(bundled_data / SLICE)
    real = genome.fetch("20", 421807, 421812).upper()  # bases at 1-based 421808..421812
    wrong = "ACGT".replace(real[1], "")[0]
    vcf = write(tmp_path / "planted.vcf", HEADER + "".join([
        f"chr20\t421808\tok\t{real[0]}\t{'G' if real[0] != 'G' else 'T'}\t.\t.\t.\n",  # alias chr20 -> 20
        f"20\t421809\tmismatch\t{wrong}\tA\t.\t.\t.\n",
        "7\t100\tunknown\tA\tC\t.\t.\t.\n",
        "20\t63025520\tlast\tN\tA\t.\t.\t.\n",
        "20\t63025521\tpast\tA\tC\t.\t.\t.\n",
        f"20\t421810\tsym\t{real[2]}\t<DEL>,*\t.\t.\t.\n",
        f"20\t421810\tnoalt\t{real[2]}\t.\t.\t.\t.\n",
        f"20\t421808\tmulti\t{real[:2]}\t{real[0]},{real[:2]}A\t.\t.\t.\n",
        "20\t0\ttelomere\tA\tC\t.\t.\t.\n",
    ]))
    result = {rec.id: [(a.kind, a.reason) for a in alleles] for rec, alleles in iter_alleles(VariantReader(vcf), genome)}
    assert result["ok"] == [("snv", None)]
    assert result["mismatch"] == [("snv", "ref_mismatch")]
    assert result["unknown"] == [("snv", "contig_absent")]
    assert result["last"] == [("snv", "non_acgt_allele")]
    assert result["past"] == [("snv", "beyond_contig_end")]
    assert result["sym"] == [("symbolic", "symbolic_allele"), ("symbolic", "symbolic_allele")]
    assert result["noalt"] == [("missing", "missing_alt")]
    assert result["multi"] == [("indel", None), ("indel", None)]
    assert result["telomere"] == [("snv", "position_zero")]
    assert set(r for rows in result.values() for _, r in rows if r) <= set(REASONS)
    # the contig is resolved to the FASTA's own name
    ((_, (a,)),) = [(r, al) for r, al in iter_alleles(VariantReader(vcf), genome) if r.id == "ok"]
    assert a.contig == "20" and a.chrom == "chr20"


# -- an index that belongs to another version of the file ---------------------------------------------------

def _indexed_vcf(path, positions, contigs=("20",), index=True):
    header = "##fileformat=VCFv4.2\n" + "".join(f"##contig=<ID={c},length=64000000>\n" for c in contigs)
    body = "".join(f"{contigs[0]}\t{p}\t.\tA\tC\t.\tPASS\t.\n" for p in positions)
    path.with_suffix("").write_text(header + "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n" + body)
    pysam.tabix_compress(str(path.with_suffix("")), str(path), force=True)
    if index:
        pysam.tabix_index(str(path), preset="vcf", force=True)
    return path


def test_index_of_another_version_is_named_not_an_empty_result(tmp_path):
    # the same number of records of the same length, moved: every byte offset of the old index lands on a
    # record boundary, and htslib silently returns nothing for the new records' region
    old = _indexed_vcf(tmp_path / "old.vcf.gz", range(1_000_000, 1_010_100, 100))
    new = _indexed_vcf(tmp_path / "calls.vcf.gz", range(3_000_000, 3_010_100, 100), index=False)
    shutil.copy(str(old) + ".tbi", str(new) + ".tbi")
    os.utime(str(new) + ".tbi", ns=(0, new.stat().st_mtime_ns + 10**9))  # newer than the file: htslib is happy
    assert sum(1 for _ in pysam.VariantFile(str(new)).fetch("20", 2_999_999, 3_005_000)) == 0  # the silent loss
    with pytest.raises(GenossmError, match=r"calls\.vcf\.gz\.tbi: this index does not match .*calls\.vcf\.gz \(the "
                                           r"region holds records, e\.g\. 20:3000000"):
        list(VariantReader(new, region="20:3,000,000-3,005,000"))
    # a region that is empty in the file stays a plain empty result, with either index
    assert list(VariantReader(new, region="20:1,000,001-1,005,000")) == []
    assert list(VariantReader(old, region="20:3,000,001-3,005,000")) == []
    assert len(list(VariantReader(old, region="20:1,000,001-1,005,000"))) == 50


def test_index_listing_contigs_the_header_lacks_is_refused(tmp_path):
    old = _indexed_vcf(tmp_path / "old.vcf.gz", range(1000, 2000, 100), contigs=("7", "20"))
    new = _indexed_vcf(tmp_path / "calls.vcf.gz", range(1000, 2000, 100), contigs=("20",), index=False)
    shutil.copy(str(old) + ".tbi", str(new) + ".tbi")
    with pytest.raises(GenossmError, match=r"calls\.vcf\.gz\.tbi: the index lists contig\(s\) \['7'\] that the header"):
        VariantReader(new, region="20:1-5000")


def test_foreign_index_through_the_command(tmp_path, bundled_data):
    model = save_tiny_model(tmp_path / "model")
    old = _indexed_vcf(tmp_path / "old.vcf.gz", range(1_000_000, 1_010_100, 100))
    new = _indexed_vcf(tmp_path / "calls.vcf.gz", range(3_000_000, 3_010_100, 100), index=False)
    shutil.copy(str(old) + ".tbi", str(new) + ".tbi")
    done = subprocess.run(
        [sys.executable, "-m", "genossm.cli", "score-variants", f"variants={new}", "region=20:3000000-3005000",
         f"fasta={bundled_data / SLICE}", f"output={tmp_path / 'out.vcf.gz'}", f"pretrained={model}"],
        capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "calls.vcf.gz.tbi: this index does not match" in done.stderr
    assert not (tmp_path / "out.vcf.gz").exists()


def test_more_sample_columns_than_the_header_is_an_error_naming_the_line(tmp_path):
    header = ('##fileformat=VCFv4.2\n##contig=<ID=20,length=63025520>\n##FORMAT=<ID=GT,Number=1,Type=String,'
              'Description="Genotype">\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tS1\n')
    good = "20\t100\t.\tA\tC\t.\tPASS\t.\tGT\t0/1\n"
    bad = "20\t200\t.\tA\tC\t.\tPASS\t.\tGT\t0/1\t1/1\n"
    for name, opener in (("s.vcf", open), ("s.vcf.gz", gzip.open)):
        with opener(tmp_path / name, "wt") as fh:
            fh.write(header + good + bad)
        with pytest.raises(GenossmError, match=rf"{name}: line 6: 11 columns where the #CHROM header line names 10 \(1 sample"):
            list(VariantReader(tmp_path / name).pysam_records())
    (tmp_path / "ok.vcf").write_text(header + good + good)
    assert len(list(VariantReader(tmp_path / "ok.vcf").pysam_records())) == 2
    sites = header.replace("\tFORMAT\tS1", "").replace("##FORMAT", "##INFO").replace("Number=1,Type=String", "Number=1,Type=String")
    (tmp_path / "sites.vcf").write_text(sites + "20\t100\t.\tA\tC\t.\tPASS\t.\tGT\t0/1\n")
    with pytest.raises(GenossmError, match=r"line 5: 10 columns where the #CHROM header line names 8 \(0 sample"):
        list(VariantReader(tmp_path / "sites.vcf").pysam_records())
