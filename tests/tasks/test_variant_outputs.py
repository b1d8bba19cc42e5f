"""What score-variants writes, below the workflow: the scored VCF (records and their text kept, Number=A INFO
fields) and the score table (TSV, gzipped TSV, Parquet), each renamed into place only when complete."""

import pandas as pd
import pysam
import pytest

from genossm.data.variants import VariantReader
from genossm.tasks.variant_outputs import TableOutput, VcfOutput

MULTI = "variants_chr20_multiallelic.vcf"


def test_vcf_output_keeps_records_and_reads_back(tmp_path, bundled_data):
    reader = VariantReader(bundled_data / MULTI)
    out = tmp_path / "scored.vcf.gz"
    with VcfOutput(out, reader.header) as vcf:
        for rec, prec, line in reader.records_with_text():
            vcf.write(line, [-1.5, float("nan")], [0.25, float("nan")], [None, "ref_mismatch"])
    assert not list(tmp_path.glob(".*tmp*"))  # renamed into place, no temp file left
    with pysam.VariantFile(str(out)) as vf:
        assert "GENOSSM_LLR" in vf.header.info and vf.header.info["GENOSSM_LLR"].number == "A"
        assert "Negative = alt less likely than ref" in vf.header.info["GENOSSM_LLR"].description
        assert "36722" in list(vf.header.samples)
        (rec,) = list(vf)
    assert rec.info["GENOSSM_LLR"] == (-1.5, None)
    assert rec.info["GENOSSM_EMB_DIST"] == (0.25, None)
    assert rec.info["GENOSSM_SKIP"] == (".", "ref_mismatch")
    assert rec.info["RU"] == "G" and rec.samples["36722"]["GT"] == (0, 1)


@pytest.mark.parametrize("name", ["t.tsv", "t.tsv.gz", "t.parquet"])
def test_table_output_roundtrip(tmp_path, name):
    path = tmp_path / name
    with TableOutput(path) as tab:
        tab.add({"record": 0, "chrom": "20", "pos": 5, "id": "", "ref": "A", "alt": "C", "allele": 1, "kind": "snv",
                 "llr": -0.5, "emb_dist": 0.1, "reason": ""})
        tab.add({"record": 1, "chrom": "7", "pos": 9, "id": "x", "ref": "A", "alt": "C", "allele": 1, "kind": "snv",
                 "llr": float("nan"), "emb_dist": float("nan"), "reason": "contig_absent"})
    df = pd.read_parquet(path) if name.endswith("parquet") else pd.read_csv(path, sep="\t", keep_default_na=False)
    assert list(df["chrom"].astype(str)) == ["20", "7"] and list(df["pos"]) == [5, 9]
    assert float(df["llr"][0]) == -0.5
    assert df["llr"][1] in ("", None) or pd.isna(df["llr"][1])
    assert list(df["reason"].fillna("")) == ["", "contig_absent"]


def test_table_output_is_atomic(tmp_path):
    path = tmp_path / "t.tsv"
    with pytest.raises(RuntimeError):
        with TableOutput(path) as tab:
            tab.add({"record": 0, "chrom": "20", "pos": 5, "id": "", "ref": "A", "alt": "C", "allele": 1,
                     "kind": "snv", "llr": 0.0, "emb_dist": 0.0, "reason": ""})
            raise RuntimeError("crash half-way")
    assert list(tmp_path.iterdir()) == []
