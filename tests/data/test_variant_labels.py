"""Labelled variants and earlier scores: per-allele values, every scored-file form, and broken files named."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from genossm.data.variant_labels import LabelledVariants, join_scores, read_scored, variant_kind
from genossm.errors import GenossmError

HEADER = ("##fileformat=VCFv4.2\n##contig=<ID=20>\n"
          '##INFO=<ID=GENOSSM_LLR,Number=A,Type=Float,Description="x">\n'
          '##INFO=<ID=GENOSSM_EMB_DIST,Number=A,Type=Float,Description="x">\n'
          '##INFO=<ID=AF,Number=A,Type=Float,Description="x">\n'
          '##INFO=<ID=R,Number=R,Type=Integer,Description="x">\n'
          '##INFO=<ID=CAUSAL,Number=0,Type=Flag,Description="x">\n'
          "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n")


def test_kinds():
    assert [variant_kind(r, a) for r, a in (("A", "C"), ("AC", "GT"), ("A", "AT"), ("AT", "A"), ("A", "<DEL>"), ("A", "."))] \
        == ["snv", "mnv", "insertion", "deletion", "other", "other"]


def test_vcf_values_go_to_their_allele(tmp_path):
    vcf = tmp_path / "l.vcf"
    vcf.write_text(HEADER + "20\t5\t.\tA\tC,AT\t.\t.\tAF=0.05,0.3;R=7,1,2;CAUSAL\n20\t9\t.\tG\tT\t.\t.\tAF=0.5;R=3,4\n")
    lab = LabelledVariants(vcf, ["AF", "R", "CAUSAL"])
    t = lab.table
    assert list(t["alt"]) == ["C", "AT", "T"] and list(t["kind"]) == ["snv", "insertion", "snv"]
    assert list(lab.numbers("AF", "label", False)) == [0.05, 0.3, 0.5]  # as written, not float32's 0.0500000007
    assert list(lab.numbers("R", "x", False)) == [1, 2, 4]  # Number=R: the REF's value is not an allele's
    assert list(lab.numbers("CAUSAL", "label", False)) == [1, 1, 0]  # a flag: present or absent
    assert lab.where(2) == f"{vcf}: line 10"


def test_tsv_comma_values_per_allele_and_errors(tmp_path):
    tsv = tmp_path / "l.tsv"
    tsv.write_text("#Chrom\tpos\tref\talt\tLabel\tgroup\n20\t5\tA\tC,G\t1,0\tg1\n20\t9\tA\tG\t0\tg1\n")
    lab = LabelledVariants(tsv, ["label", "group"])  # header names matched as the variant columns are
    assert list(lab.numbers("label", "label", False)) == [1, 0, 0]
    assert list(lab.strings("group")) == ["g1", "g1", "g1"]
    bad = tmp_path / "bad.tsv"
    bad.write_text("chrom\tpos\tref\talt\tlabel\n20\t5\tA\tC,G,T\t1,0\n")
    with pytest.raises(GenossmError, match=r"bad.tsv: line 2: label has 2 values for 3 ALT allele\(s\)"):
        LabelledVariants(bad, ["label"])
    inf = tmp_path / "inf.tsv"
    inf.write_text("chrom\tpos\tref\talt\tlabel\n20\t5\tA\tC\tinf\n")
    with pytest.raises(GenossmError, match="inf.tsv: line 2: label 'inf' .* is not a finite number"):
        LabelledVariants(inf, ["label"]).numbers("label", "label", False)


def test_scores_read_from_a_vcf_a_table_and_parquet(tmp_path):
    vcf = tmp_path / "scored.vcf"
    vcf.write_text(HEADER + "chr20\t5\t.\tA\tC,AT\t.\t.\tGENOSSM_LLR=-1.5,.;GENOSSM_EMB_DIST=0.1,.\n")
    from_vcf, _ = read_scored(vcf)
    assert from_vcf["key"].tolist() == [("20", 5, "A", "C"), ("20", 5, "A", "AT")]
    assert from_vcf["llr"].iloc[0] == -1.5 and np.isnan(from_vcf["llr"].iloc[1])  # no score: missing, not an error
    table = pd.DataFrame({"chrom": ["20", "20"], "pos": [5, 5], "ref": ["A", "A"], "alt": ["C", "AT"],
                          "llr": [-1.5, np.nan], "emb_dist": [0.1, np.nan]})
    table.to_parquet(tmp_path / "scored.parquet")
    table.to_csv(tmp_path / "scored.tsv", sep="\t", index=False)
    for name in ("scored.parquet", "scored.tsv"):
        got, _ = read_scored(tmp_path / name)
        assert got["key"].tolist() == from_vcf["key"].tolist()
        np.testing.assert_array_equal(got["llr"].to_numpy(), from_vcf["llr"].to_numpy())
    labels = tmp_path / "l.tsv"
    labels.write_text("chrom\tpos\tref\talt\tlabel\n20\t5\ta\tat\t1\n")  # case and contig alias do not matter
    joined = join_scores(LabelledVariants(labels, ["label"]), from_vcf, str(vcf))
    assert np.isnan(joined["llr"]).all() and len(joined["llr"]) == 1
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(GenossmError, match="broken.parquet: cannot read as parquet"):
        read_scored(tmp_path / "broken.parquet")
    pd.DataFrame({"chrom": ["20"], "pos": [5]}).to_parquet(tmp_path / "other.parquet")
    with pytest.raises(GenossmError, match="other.parquet: not a score-variants table: no column ref, alt, llr, emb_dist"):
        read_scored(tmp_path / "other.parquet")
    with pytest.raises(GenossmError, match="missing.tsv: file not found"):
        read_scored(tmp_path / "missing.tsv")
