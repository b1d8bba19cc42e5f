import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from genossm.errors import GenossmError
from genossm.models import BiMambaLM, save_pretrained
from genossm.paths import conf_dir
from genossm.cli import load_workflow

run_evaluation = load_workflow("evaluate").evaluate

REPO = Path(__file__).resolve().parents[2]
MULTI = REPO / "data" / "multi_contig.fa"
CHLORO = REPO / "data" / "athaliana_chloroplast.fa"


def uniform_model(folder: Path, extra=None) -> Path:
    """A model whose logits are all zero (embeddings zeroed, tied head): exactly 2 bits per base."""
    model = BiMambaLM({"d_model": 16, "n_layers": 1, "rc_equivariant": False, "tie_embeddings": True})
    with torch.no_grad():
        model.embedding.weight.zero_()
    return save_pretrained(model, folder, extra=extra or {"train_window_len": 128})


def evaluate(tmp_path, *overrides):
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(config_name="evaluate", overrides=[f"output={tmp_path / 'out'}", f"cache_dir={tmp_path / 'cache'}",
                                                         "baselines.max_order=3", *overrides])
    return run_evaluation(cfg)


def test_uniform_model_scores_two_bits_beside_baselines(tmp_path, capsys):
    model = uniform_model(tmp_path / "m")
    bed = tmp_path / "r.bed"
    bed.write_text("ecoli_k12\t1000\t6000\nsaureus_n315\t0\t2000\n")
    res = evaluate(tmp_path, f"pretrained={model}", f"fasta={MULTI}", f"regions={bed}", "max_windows=null")
    assert res["window_len"] == 128  # the model's training window by default
    assert res["model"]["bpb"] == pytest.approx(2.0, abs=1e-5)
    assert res["bases_in_windows"] == 7000
    b = res["baselines"]
    assert "rest of" in b["fitted_on"] and b["n_bases"] == 7000
    assert b["composition_entropy"] < 2.0 and b["best_markov"] < 2.0
    table = (tmp_path / "out" / "evaluation.tsv").read_text().splitlines()
    assert table[0].split("\t") == ["predictor", "bits_per_base", "accuracy", "n_bases", "standard_error"]
    assert table[1].startswith("model\t2.0000") and len(table) == 2 + 1 + 4
    assert table[1].split("\t")[4] == "0.000000"  # 2 bits at every base: no spread over windows
    best = [r.split("\t") for r in table[1:] if r.startswith(f"Markov order {b['best_order']}\t")][0]
    assert float(best[4]) == pytest.approx(b["best_markov_se"], abs=1e-6) and b["best_markov_se"] > 0
    assert json.loads((tmp_path / "out" / "evaluation.json").read_text())["model"]["n_bases"] > 0
    out = capsys.readouterr().out
    assert "Markov order 3" in out and "chosen on the training bases" in out
    assert "does NOT beat the best Markov model" in out and "standard errors" in out


def test_baseline_never_sees_the_held_out_span_or_the_evaluated_bases(tmp_path):
    # the model's training genome is the evaluated genome: the Markov model is fitted on what the model trained
    # on (the genome less its recorded held-out span), never on the evaluated bases
    model = uniform_model(tmp_path / "m", extra={"train_window_len": 128, "fasta": str(CHLORO),
                                                 "held_out": [["NC_000932.1", 100000, 110000]]})
    bed = tmp_path / "r.bed"
    bed.write_text("NC_000932.1\t100000\t104000\n")
    res = evaluate(tmp_path, f"pretrained={model}", f"fasta={CHLORO}", f"regions={bed}", "max_windows=null")
    b = res["baselines"]
    assert "outside the model's held-out span" in b["fitted_on"]
    assert b["n_train_bases"] == 154478 - 10000  # the chloroplast genome has no N
    bed.write_text("NC_000932.1\t0\t4000\n")  # a region inside the training span: it is left out too
    res = evaluate(tmp_path, f"pretrained={model}", f"fasta={CHLORO}", f"regions={bed}", "max_windows=null")
    assert res["baselines"]["n_train_bases"] == 154478 - 10000 - 4000


def test_contigs_and_baseline_genome(tmp_path):
    model = uniform_model(tmp_path / "m", extra={"train_window_len": 256, "fasta": str(CHLORO)})
    res = evaluate(tmp_path, f"pretrained={model}", f"fasta={MULTI}", "contigs=[ecoli_k12]", "max_windows=10")
    assert res["n_windows"] == 10 and 2000 < res["bases_in_windows"] <= 2560  # the last tile may be padded
    assert "training genome" in res["baselines"]["fitted_on"]
    # a Markov model fitted on a chloroplast does worse on E. coli than E. coli's own composition
    assert res["baselines"]["markov"][0] > res["baselines"]["composition_entropy"]


def test_a_list_of_fastas_and_the_model_training_genome_as_a_list(tmp_path, capsys):
    slice_ = REPO / "data" / "human_chr20_slice.fa.gz"
    model = uniform_model(tmp_path / "m", extra={"train_window_len": 128, "fasta": [str(CHLORO), str(slice_)]})
    bed = tmp_path / "r.bed"
    bed.write_text("NC_000932.1\t1000\t2000\nchr20\t5000\t6000\n")  # regions in both files (chr20 = 20)
    res = evaluate(tmp_path, f"pretrained={model}", f"fasta=[{CHLORO},{slice_}]", f"regions={bed}", "max_windows=null")
    assert res["fasta"] == [str(CHLORO), str(slice_)] and res["bases_in_windows"] == 2000
    assert res["model"]["bpb"] == pytest.approx(2.0, abs=1e-5)
    assert "training genome" in res["baselines"]["fitted_on"] and str(slice_) in res["baselines"]["fitted_on"]
    assert str(slice_) in capsys.readouterr().out


def test_errors(tmp_path):
    model = uniform_model(tmp_path / "m")
    with pytest.raises(GenossmError, match="pretrained=PATH is required"):
        evaluate(tmp_path, f"fasta={MULTI}")
    with pytest.raises(GenossmError, match="file not found"):
        evaluate(tmp_path, f"pretrained={model}", f"fasta={tmp_path / 'x.fa'}")
    with pytest.raises(GenossmError, match="y.fa: FASTA file not found"):
        evaluate(tmp_path, f"pretrained={model}", f"fasta=[{MULTI},{tmp_path / 'y.fa'}]")
    with pytest.raises(GenossmError, match="no bases to fit the Markov baseline on: every base of .* is scored"):
        evaluate(tmp_path, f"pretrained={model}", f"fasta={CHLORO}", "max_windows=null")
    bad = tmp_path / "bad.bed"
    bad.write_text("ecoli_k12\t10\t5\n")
    with pytest.raises(GenossmError, match="line 1"):
        evaluate(tmp_path, f"pretrained={model}", f"fasta={MULTI}", f"regions={bad}")


def test_given_baseline_genome_that_is_the_training_genome_leaves_out_the_held_out_span(tmp_path):
    # a bundled model records its training genome by file name only: baseline_fasta=<that file> is recognised
    model = uniform_model(tmp_path / "m", extra={"train_window_len": 128, "fasta": CHLORO.name,
                                                 "held_out": [["NC_000932.1", 100000, 110000]]})
    res = evaluate(tmp_path, f"pretrained={model}", f"fasta={MULTI}", f"baseline_fasta={CHLORO}", "max_windows=4")
    assert res["baselines"]["n_train_bases"] == 154478 - 10000
    assert "given baseline_fasta" in res["baselines"]["fitted_on"]
