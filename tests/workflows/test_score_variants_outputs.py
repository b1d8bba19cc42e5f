"""What genossm score-variants writes, through the command line: long alleles, record-level reasons, region
errors, the VCF's conventions (header lines, index, INFO passed through), table nulls, progress and summary."""

from __future__ import annotations

import gzip
import sys

import pandas as pd
import pysam
import pytest
import torch

from genossm import cli
from genossm.models import BiMambaConfig, BiMambaLM, save_pretrained

SLICE = "variants_chr20_slice.fa.gz"
HEADER = "##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    torch.manual_seed(0)
    model = BiMambaLM(BiMambaConfig(d_model=16, n_layers=1, d_state=4, d_conv=4, expand=2))
    return save_pretrained(model, tmp_path_factory.mktemp("pretrained") / "tiny", extra={"train_window_len": 32})


def ref(bundled_data, pos: int, n: int = 1) -> str:
    with pysam.FastaFile(str(bundled_data / SLICE)) as fa:
        return fa.fetch("20", pos - 1, pos - 1 + n).upper()


def run(argv, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    cli.main(argv)


def score(tiny_model, bundled_data, tmp_path, monkeypatch, variants, output, *extra):
    run(["score-variants", f"pretrained={tiny_model}", f"fasta={bundled_data / SLICE}", f"variants={variants}",
         f"output={output}", "progress=false", *extra], monkeypatch, tmp_path)


def test_alleles_longer_than_the_window_get_a_reason(tiny_model, bundled_data, tmp_path, monkeypatch, capsys):
    """A 301-bp deletion (and a 200-bp insertion) at window_len=128 used to get a score from a negative REF
    offset; it gets allele_exceeds_window and the summary names the window that fits, which then scores it."""
    deletion = ref(bundled_data, 421900, 301)
    base = ref(bundled_data, 421950)
    vcf = tmp_path / "long.vcf"
    vcf.write_text(HEADER + f"20\t421900\tdel301\t{deletion}\t{deletion[0]}\t.\t.\t.\n"
                   f"20\t421950\tins200\t{base}\t{base + 'ACGT' * 50}\t.\t.\t.\n"
                   f"20\t422000\tsnv\t{ref(bundled_data, 422000)}\tA\t.\t.\t.\n")
    score(tiny_model, bundled_data, tmp_path, monkeypatch, vcf, tmp_path / "w128.tsv", "window_len=128")
    table = pd.read_csv(tmp_path / "w128.tsv", sep="\t")
    assert list(table["reason"].fillna("")) == ["allele_exceeds_window", "allele_exceeds_window", ""]
    assert table["llr"][:2].isna().all() and table["llr"][2:].notna().all()
    out = capsys.readouterr().out
    assert "not scored, allele_exceeds_window: 2 (window_len=317 or more would score them)" in out
    score(tiny_model, bundled_data, tmp_path, monkeypatch, vcf, tmp_path / "w320.tsv", "window_len=320")
    table = pd.read_csv(tmp_path / "w320.tsv", sep="\t")
    assert table["reason"].isna().all() and table["llr"].notna().all()
