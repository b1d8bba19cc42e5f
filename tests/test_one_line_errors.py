"""Inputs that ended in a traceback where one `genossm: error:` line is expected: a FASTA list given to a
workflow that reads one file, an empty list entry, an unsupported precision, a GPU that is not there, a bad
OMP_NUM_THREADS."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from genossm.config import cpu_threads
from genossm.data.genome import fasta_paths
from genossm.errors import GenossmError

from helpers import run_cli

REPO = Path(__file__).resolve().parents[1]
CHLORO = REPO / "data" / "athaliana_chloroplast.fa"
MULTI = REPO / "data" / "multi_contig.fa"


def one_line(argv, monkeypatch, tmp_path, capsys) -> str:
    with pytest.raises(SystemExit) as stop:
        run_cli(argv, monkeypatch, tmp_path)
    err = capsys.readouterr().err
    assert stop.value.code == 2, err
    assert err.startswith("genossm: error:") and "Traceback" not in err and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("workflow, extra", [
    ("score-variants", ["variants=nothing.vcf", "output=out.tsv"]),
    ("finetune", ["output=ft"]),
    ("embed", ["output=emb.npy", f"regions={REPO / 'data' / 'athaliana_chloroplast.test.bed'}"]),
])
def test_a_fasta_list_where_one_file_is_read(workflow, extra, tiny_model, tmp_path, monkeypatch, capsys):
    err = one_line([workflow, f"pretrained={tiny_model}", f"fasta=[{CHLORO},{MULTI}]", *extra],
                   monkeypatch, tmp_path, capsys)
    assert f"{workflow} reads one FASTA file, not a list" in err and str(MULTI) in err


def test_an_empty_list_entry_is_named():
    with pytest.raises(GenossmError, match="entry 2 is empty"):
        fasta_paths([str(CHLORO), ""])


@pytest.mark.parametrize("precision", ["64-true", "bogus"])
def test_an_unsupported_precision(precision, tiny_model, tmp_path, monkeypatch, capsys):
    err = one_line(["evaluate", f"pretrained={tiny_model}", f"fasta={CHLORO}", f"output={tmp_path / 'e'}",
                    f"precision={precision}"], monkeypatch, tmp_path, capsys)
    assert f"precision={precision}: expected auto or one of 32-true" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="the message is for a machine without a GPU")
def test_evaluate_on_a_gpu_that_is_not_there(tiny_model, tmp_path, monkeypatch, capsys):
    err = one_line(["evaluate", f"pretrained={tiny_model}", f"fasta={CHLORO}", f"output={tmp_path / 'e'}",
                    "device=cuda"], monkeypatch, tmp_path, capsys)
    assert "device=cuda: no CUDA GPU is visible" in err


@pytest.mark.parametrize("value", ["0", "two"])
def test_omp_num_threads_is_named_when_it_is_the_culprit(value, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    with pytest.raises(GenossmError, match=f"OMP_NUM_THREADS='{value}' in the environment"):
        cpu_threads("auto")
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert cpu_threads("auto") == 3


def test_embed_without_regions(tiny_model, tmp_path, monkeypatch, capsys):
    err = one_line(["embed", f"pretrained={tiny_model}", f"fasta={CHLORO}", "output=emb.npy"], monkeypatch, tmp_path,
                   capsys)
    assert "regions=PATH is required" in err


@pytest.mark.parametrize("workflow, key", [("pretrain", "variants"), ("inspect", "regions"),
                                           ("score-variants", "regions"), ("finetune", "variants")])
def test_a_key_the_workflow_does_not_use(workflow, key, tmp_path, monkeypatch, capsys):
    err = one_line([workflow, f"{key}=x.vcf"], monkeypatch, tmp_path, capsys)
    assert f"{workflow} does not use {key}=" in err
    assert not any(tmp_path.iterdir())  # refused before anything ran


def test_the_shared_run_keys_are_in_every_workflow():
    from genossm.config import compose

    for workflow in ("inspect", "pretrain", "evaluate", "score-variants", "evaluate-variants", "finetune",
                     "score-regions", "embed"):
        cfg = compose(workflow, ["seed=3", "torch_threads=1"])
        assert (cfg.seed, cfg.torch_threads) == (3, 1), workflow
        if workflow != "inspect":
            assert compose(workflow, ["precision=bf16-mixed"]).precision == "bf16-mixed", workflow


@pytest.mark.parametrize("argv, message", [
    (["score-variants", "pretrained=model", "output=out.tsv"], "fasta= is required"),  # was a traceback (???)
    (["score-regions", "output=out.tsv", f"regions={REPO / 'data' / 'athaliana_chloroplast.test.bed'}"],
     "pretrained=PATH is required"),
    (["score-regions", "output=out.tsv", "pretrained=model"], "regions=PATH is required"),
    (["embed", "output=emb.npy"], "pretrained=PATH is required"),
])
def test_a_required_key_left_unset_is_named(argv, message, tmp_path, monkeypatch, capsys):
    assert message in one_line(argv, monkeypatch, tmp_path, capsys)
