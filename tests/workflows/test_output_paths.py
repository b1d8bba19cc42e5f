"""Outputs that would collide, replace an input or land where nothing can be written are refused before any
work, naming both keys (one output was lost, or the input replaced, with exit status 0)."""

from __future__ import annotations


import pysam
import pytest

from helpers import run_cli

SLICE = "variants_chr20_slice.fa.gz"


@pytest.fixture
def vcf(tmp_path, bundled_data):
    with pysam.FastaFile(str(bundled_data / SLICE)) as fa:
        base = fa.fetch("20", 421999, 422000).upper()
    path = tmp_path / "in.vcf"
    path.write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
                    f"20\t422000\tv1\t{base}\t{'A' if base != 'A' else 'C'}\t.\t.\t.\n")
    return path


def refused(argv, monkeypatch, tmp_path, capsys) -> str:
    with pytest.raises(SystemExit) as stop:
        run_cli(argv, monkeypatch, tmp_path)
    err = capsys.readouterr().err
    assert stop.value.code == 2, err
    assert err.startswith("genossm: error:") and "Traceback" not in err
    return err


def test_colliding_variant_outputs_are_refused(tiny_model, bundled_data, vcf, tmp_path, monkeypatch, capsys):
    common = ["score-variants", f"pretrained={tiny_model}", f"fasta={bundled_data / SLICE}", "progress=false"]
    text = vcf.read_text()
    out, tsv = tmp_path / "out.vcf", tmp_path / "out.tsv"
    folder = tmp_path / "results.vcf"
    folder.mkdir()
    cases = [
        ([f"variants={vcf}", f"output={out}", f"table={out}"], ["output=", "table="]),
        ([f"variants={vcf}", f"output={out}", f"embeddings={out}"], ["output=", "embeddings="]),
        ([f"variants={vcf}", f"output={out}", f"embeddings={tsv}"], ["the table beside output=", "embeddings="]),
        ([f"variants={vcf}", f"output={tsv}", f"embeddings={tsv}"], ["output=", "embeddings="]),
        ([f"variants={vcf}", f"output={vcf}"], ["output=", "variants="]),
        (["scan=saturation", "region=20:421801-421840", f"output={tsv}", f"heatmap={tsv}"], ["output=", "heatmap="]),
        (["scan=saturation", "region=20:421801-421840", f"output={tsv}", f"heatmap={tmp_path / 'h.jpg'}"],
         ["heatmap=", ".png, .svg or .pdf"]),
        ([f"variants={vcf}", f"output={folder}"], ["output=", "is a folder"]),
        ([f"variants={vcf}", f"output={tmp_path / 'a.tsv'}", f"table={tsv}"], ["output=", "table=", "drop table="]),
        ([f"variants={vcf}", f"output={vcf}/out.vcf"], ["output=", "is a file, not a folder"]),
    ]
    for extra, names in cases:
        err = refused([*common, *extra], monkeypatch, tmp_path, capsys)
        assert all(n in err for n in names), (extra, err)
        assert vcf.read_text() == text
        assert sorted(p.name for p in tmp_path.iterdir()) == ["in.vcf", "results.vcf"], (extra, list(tmp_path.iterdir()))


def test_evaluate_output_that_cannot_be_written_is_refused_first(tiny_model, bundled_data, tmp_path, monkeypatch,
                                                                capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    err = refused(["evaluate", f"pretrained={tiny_model}", f"fasta={bundled_data / 'athaliana_chloroplast.fa'}",
                   f"output={blocker}/eval", "max_windows=2", "baselines.enabled=false"], monkeypatch, tmp_path, capsys)
    assert "output=" in err and "is a file, not a folder" in err
