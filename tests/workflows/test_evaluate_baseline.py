"""evaluate's Markov baseline and verdict: fitted by default on the evaluated genome outside the scored windows
(a bundled model's training genome is not on the user's disk), never on zero bases, never on a file that only
has the training genome's name or path; the verdict's clauses agree with the table."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from genossm.cli import load_workflow
from genossm.checksums import file_sha256
from genossm.errors import GenossmError
from genossm.models import BiMambaLM, save_pretrained
from genossm.paths import conf_dir
from genossm.tasks.outputs import markov_verdict

from helpers import run_cli

REPO = Path(__file__).resolve().parents[2]
MULTI = REPO / "data" / "multi_contig.fa"
CHLORO = REPO / "data" / "athaliana_chloroplast.fa"

run_evaluation = load_workflow("evaluate").evaluate


def uniform_model(folder: Path, extra) -> Path:
    model = BiMambaLM({"d_model": 16, "n_layers": 1, "rc_equivariant": False, "tie_embeddings": True})
    with torch.no_grad():
        model.embedding.weight.zero_()
    return save_pretrained(model, folder, extra=extra)


def evaluate(tmp_path, *overrides):
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(config_name="evaluate", overrides=[f"output={tmp_path / 'out'}", f"cache_dir={tmp_path / 'cache'}",
                                                         "baselines.max_order=3", *overrides])
    return run_evaluation(cfg)


def test_a_model_whose_training_genome_is_elsewhere_just_works(tmp_path, monkeypatch):
    """As bundled:bacteria: the training genome recorded by name only, absent here; defaults otherwise."""
    monkeypatch.chdir(tmp_path)
    model = uniform_model(tmp_path / "m", {"train_window_len": 128, "fasta": "ecoli_k12_mg1655.fa.gz",
                                           "fasta_sha256": "0" * 64})
    res = evaluate(tmp_path, f"pretrained={model}", f"fasta={CHLORO}", "max_windows=16")
    b = res["baselines"]
    assert "the bases outside the scored windows" in b["fitted_on"] and "is not here" in b["fitted_on"]
    assert b["n_train_bases"] == 154478 - res["bases_in_windows"]  # the whole genome less the scored windows


def test_the_evaluated_genome_as_baseline_fasta_never_fits_on_zero_bases(tmp_path):
    model = uniform_model(tmp_path / "m", {"train_window_len": 128})
    res = evaluate(tmp_path, f"pretrained={model}", f"fasta={CHLORO}", f"baseline_fasta={CHLORO}", "max_windows=16")
    b = res["baselines"]
    assert b["n_train_bases"] == 154478 - res["bases_in_windows"]
    assert b["best_markov"] < 2.0  # fitted on real bases (0 bases: 2.0000 at every order)
    with pytest.raises(GenossmError, match=f"baseline_fasta={CHLORO}: no bases left"):
        evaluate(tmp_path, f"pretrained={model}", f"fasta={CHLORO}", f"baseline_fasta={CHLORO}", "max_windows=null")


@pytest.mark.parametrize("where", ["working folder", "recorded path"])
def test_a_file_that_only_has_the_training_genomes_name_is_not_used(tmp_path, monkeypatch, where):
    """Another genome under the recorded name in the working folder, or a replaced file at the recorded path."""
    monkeypatch.chdir(tmp_path)
    genome = tmp_path / "train_genome.fa"
    shutil.copy(CHLORO, genome)
    recorded = genome.name if where == "working folder" else str(genome)
    model = uniform_model(tmp_path / "m", {"train_window_len": 128, "fasta": recorded,
                                           "fasta_sha256": file_sha256(genome)})
    res = evaluate(tmp_path, f"pretrained={model}", f"fasta={MULTI}", "max_windows=8")
    assert "the model's training genome" in res["baselines"]["fitted_on"] and "SHA-256 checked" in res["baselines"]["fitted_on"]
    shutil.copy(MULTI, genome)  # replaced: same name, other content
    res = evaluate(tmp_path, f"pretrained={model}", f"fasta={MULTI}", "max_windows=8")
    fitted_on = res["baselines"]["fitted_on"]
    assert "training genome" not in fitted_on.split(";")[0]
    assert "is not the model's training genome (its SHA-256 differs" in fitted_on


def test_pretrain_records_the_training_genomes_sha256(tmp_path):
    from genossm.models import load_extra

    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(config_name="pretrain", overrides=[
            "~experiment", "data=custom", f"fasta={CHLORO}", "model=tiny", "model.d_model=16", "model.n_layers=1",
            "trainer=cpu", "trainer.enable_progress_bar=false", "data.num_workers=0", "baselines.enabled=false",
            "data.window_len=128", "data.batch_size=2", "data.samples_per_epoch=2", "trainer.max_steps=1",
            "torch_threads=1", f"data.cache_dir={tmp_path / 'cache'}", f"output={tmp_path / 'run'}"])
    load_workflow("pretrain").train(cfg)
    assert load_extra(tmp_path / "run" / "model")["fasta_sha256"] == file_sha256(CHLORO)


def test_the_verdict_gives_each_comparison_its_own_clause():
    """The fuzz case: worse than the composition entropy, better than the best Markov model by 3.7 SE; the
    line read "does NOT beat the composition entropy and the best Markov model"."""
    base = {"composition_entropy": 1.9950, "best_markov": 2.0534, "best_markov_se": 0.0100}
    line = markov_verdict({"bpb": 2.0026, "bpb_se": 0.0107}, base)
    assert line.startswith("the model does NOT beat the composition entropy (2.0026 vs 1.9950); ")
    assert "it beats the best Markov model (by 0.0508 bits/base, 3.5 standard errors)" in line
    line = markov_verdict({"bpb": 1.9, "bpb_se": 0.001}, dict(base, best_markov=1.95, best_markov_se=0.001))
    assert line.startswith("the model beats the composition entropy") and "; it beats the best Markov" in line
    line = markov_verdict({"bpb": 2.1, "bpb_se": 0.001}, dict(base, best_markov_se=0.001))
    assert "; it does NOT beat the best Markov model (by -0.0466" in line


@pytest.mark.slow
def test_bundled_model_on_a_new_genome_with_defaults(tmp_path, monkeypatch, capsys):
    """genossm evaluate pretrained=bundled:bacteria fasta=GENOME stopped with "no bases to fit the Markov baseline"."""
    import pysam

    genome = tmp_path / "new_genome.fa"  # 464 kb: more than the 256 windows of 1,024 bases scored by default
    with open(genome, "w") as out:
        for path in (CHLORO, REPO / "data" / "human_chr20_slice.fa.gz", MULTI):
            with pysam.FastaFile(str(path)) as fa:
                for name in fa.references:
                    out.write(f">{path.name.split('.')[0]}_{name}\n{fa.fetch(name)}\n")
    run_cli(["evaluate", "pretrained=bundled:bacteria", f"fasta={genome}", f"output={tmp_path / 'out'}",
             "torch_threads=1"], monkeypatch, tmp_path)
    out = capsys.readouterr().out
    assert "the bases outside the scored windows" in out and "best Markov model" in out
