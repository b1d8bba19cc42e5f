"""Each workflow has one run function of a composed config: called from Python with ``genossm.compose``'s config,
it writes what the command writes, byte for byte."""

from __future__ import annotations

import pytest

import genossm
from genossm.cli import load_workflow

from helpers import run_cli

SLICE = "variants_chr20_slice.fa.gz"
INDELS = "variants_chr20_indels_1000g.vcf.gz"


def test_score_variants_run_is_the_command(tiny_model, bundled_data, tmp_path, monkeypatch):
    args = [f"pretrained={tiny_model}", f"fasta={bundled_data / SLICE}", f"variants={bundled_data / INDELS}",
            "progress=false", "window_len=40", "alleles_per_batch=7", "torch_threads=1"]
    run_cli(["score-variants", *args, f"output={tmp_path / 'cli.vcf.gz'}"], monkeypatch, tmp_path)
    cfg = genossm.compose("score-variants", [*args, f"output={tmp_path / 'api.vcf.gz'}"])
    load_workflow("score-variants").run(cfg)
    assert (tmp_path / "cli.tsv").read_bytes() == (tmp_path / "api.tsv").read_bytes()
    assert (tmp_path / "cli.vcf.gz").read_bytes() == (tmp_path / "api.vcf.gz").read_bytes()


def test_score_variants_run_takes_the_old_spellings(tiny_model, bundled_data, tmp_path):
    cfg = genossm.compose("score-variants", [f"pretrained={tiny_model}", f"fasta={bundled_data / SLICE}",
                                             f"variants={bundled_data / INDELS}", "progress=false", "window_len=40",
                                             "batch_size=7", f"output={tmp_path / 'old.tsv'}"])
    with pytest.warns(FutureWarning, match="batch_size is deprecated"):
        load_workflow("score-variants").run(cfg)
    assert cfg.alleles_per_batch == 7 and (tmp_path / "old.tsv").is_file()


def test_finetune_run_is_the_command(tiny_model, tmp_path, monkeypatch):
    args = [f"pretrained={tiny_model}", "trainer.max_epochs=1", "kmer.enabled=false", "torch_threads=1"]
    run_cli(["finetune", *args, f"output={tmp_path / 'cli'}"], monkeypatch, tmp_path)
    load_workflow("finetune").run(genossm.compose("finetune", [*args, f"output={tmp_path / 'api'}"]))
    for name in ("predictions.tsv", "metrics.json"):
        assert (tmp_path / "cli" / name).read_bytes() == (tmp_path / "api" / name).read_bytes(), name
    # config.yaml is written from Python too, the same but for the run folder
    cli_config, api_config = ((tmp_path / d / "config.yaml").read_text() for d in ("cli", "api"))
    assert api_config == cli_config.replace(str(tmp_path / "cli"), str(tmp_path / "api"))
