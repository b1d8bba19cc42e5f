"""genossm score-variants end to end through the command line (Hydra config, trainer group, outputs)."""

from __future__ import annotations

import gzip

import pandas as pd
import pysam
import pytest

from genossm import cli

from helpers import run_cli, save_tiny_model

SLICE = "variants_chr20_slice.fa.gz"
INDELS = "variants_chr20_indels_1000g.vcf.gz"
MULTI = "variants_chr20_multiallelic.vcf"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("pretrained") / "tiny", rc_equivariant=True)


def vcf_rows(path):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as fh, pysam.VariantFile(fh) as vf:
        return [(r.chrom, r.pos, r.ref, r.alts) for r in vf]


def test_cli_scores_vcf_and_writes_table(tiny_model, bundled_data, tmp_path, monkeypatch, capsys):
    out = tmp_path / "scored.vcf.gz"
    run_cli(["score-variants", f"pretrained={tiny_model}", f"fasta={bundled_data / SLICE}",
             f"variants={bundled_data / MULTI}", f"output={out}", "progress=false"], monkeypatch, tmp_path)
    assert vcf_rows(out) == vcf_rows(bundled_data / MULTI)
    with pysam.VariantFile(str(out)) as vf:
        (rec,) = list(vf)
    # the record is on chromosome 1, absent from the chr20 FASTA: kept, with a reason per ALT allele
    assert rec.info["GENOSSM_SKIP"] == ("contig_absent", "contig_absent")
    table = pd.read_csv(tmp_path / "scored.tsv", sep="\t")
    assert list(table["alt"]) == ["TGG", "T"] and list(table["reason"]) == ["contig_absent"] * 2
    assert "contig_absent: 2" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scored.tsv", "scored.vcf.gz", "scored.vcf.gz.tbi"]  # nothing else left


def test_cli_scores_real_alleles_as_the_python_api(tiny_model, bundled_data, tmp_path, monkeypatch):
    """Every keyword of the workflow reaches the scorer: the command's scores are the Python API's."""
    score_variants = cli.load_workflow("score-variants").score_variants

    options = dict(window_len=40, indel_flank=1, strands="both", distance="euclidean", pooling="center", alleles_per_batch=7)
    out = tmp_path / "cli.tsv"
    run_cli(["score-variants", f"pretrained={tiny_model}", f"fasta={bundled_data / SLICE}", f"variants={bundled_data / INDELS}",
             f"output={out}", "progress=false", *(f"{k}={v}" for k, v in options.items())],
            monkeypatch, tmp_path)
    api = tmp_path / "api.tsv"
    score_variants(tiny_model, bundled_data / SLICE, api, bundled_data / INDELS, progress=False, **options)
    got, want = pd.read_csv(out, sep="\t"), pd.read_csv(api, sep="\t")
    assert len(got) == 194 and got["llr"].notna().all() and got["emb_dist"].notna().all()
    pd.testing.assert_frame_equal(got, want)
    default = tmp_path / "default.tsv"
    score_variants(tiny_model, bundled_data / SLICE, default, bundled_data / INDELS, progress=False, alleles_per_batch=7)
    assert not pd.read_csv(default, sep="\t")["llr"].equals(got["llr"])  # the options did change the scores


def test_cli_user_errors_exit_2(tiny_model, bundled_data, tmp_path, monkeypatch, capsys):
    with pytest.raises(SystemExit) as exc:
        run_cli(["score-variants", f"pretrained={tiny_model}", f"fasta={bundled_data / SLICE}",
                 f"variants={bundled_data / INDELS}", f"output={tmp_path / 'x.vcf'}", "region=20:1-1000000"],
                monkeypatch, tmp_path)
    assert exc.value.code == 2
    assert "plain gzip, not bgzip" in capsys.readouterr().err
    broken = tmp_path / "broken.vcf"
    broken.write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n20\tx\t.\tA\tC\t.\t.\t.\n")
    with pytest.raises(SystemExit) as exc:
        run_cli(["score-variants", f"pretrained={tiny_model}", f"fasta={bundled_data / SLICE}",
                 f"variants={broken}", f"output={tmp_path / 'y.vcf'}", "progress=false"], monkeypatch, tmp_path)
    assert exc.value.code == 2
    assert "broken.vcf: line 3" in capsys.readouterr().err
    assert not (tmp_path / "y.vcf").exists()


@pytest.mark.shared_data
@pytest.mark.slow
def test_full_files_from_shared_data(tiny_model, shared_data, tmp_path, monkeypatch):
    """The full chr20 genome and both VCFs as distributed: every record back, in order, scored or explained."""
    fasta = shared_data / "genomes" / "human_chr20_GRCh37.fa.gz"
    for name, out_name in (("chr20_indels_1000g.vcf.gz", "indels.vcf.gz"), ("chr20_multiallelic.vcf", "multi.bcf")):
        src = shared_data / "variants" / name
        out = tmp_path / out_name
        run_cli(["score-variants", f"pretrained={tiny_model}", f"fasta={fasta}", f"variants={src}", f"output={out}",
                 "window_len=40", "indel_flank=1", "emb_dist=false", "alleles_per_batch=64", "progress=false",
                 f"cache_dir={tmp_path / 'cache'}"], monkeypatch, tmp_path)
        with pysam.VariantFile(str(out)) as vf:
            got = list(vf)
        assert [(r.chrom, r.pos, r.ref, r.alts) for r in got] == vcf_rows(src)
        for r in got:
            llr = r.info.get("GENOSSM_LLR")
            skip = r.info.get("GENOSSM_SKIP")
            # every ALT allele has exactly one of: a score, a reason
            for i in range(len(r.alts)):
                assert (llr is not None and llr[i] is not None) != (skip is not None and skip[i] != ".")
    table = pd.read_csv(tmp_path / "indels.tsv", sep="\t")
    assert len(table) == 194 and table["llr"].notna().all()
