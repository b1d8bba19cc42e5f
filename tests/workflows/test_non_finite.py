"""Non-finite numbers are never results: training stops on a NaN loss or NaN weights (and exports nothing),
score-variants gives a NaN score a skip reason instead of counting it as scored, evaluate refuses to print nan."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pysam
import pytest
import torch
from hydra import compose, initialize_config_dir

from genossm.cli import load_workflow
from genossm.errors import GenossmError
from genossm.paths import conf_dir

from helpers import run_cli, save_tiny_model, tiny_lm

REPO = Path(__file__).resolve().parents[2]
CHLORO = REPO / "data" / "athaliana_chloroplast.fa"
SLICE = REPO / "data" / "variants_chr20_slice.fa.gz"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_a_diverging_run_stops_and_exports_nothing(tmp_path):
    run = tmp_path / "run"
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(config_name="pretrain", overrides=[
            "~experiment", "data=custom", f"fasta={CHLORO}", "model=tiny", "model.d_model=16", "model.n_layers=1",
            "trainer=cpu", "trainer.enable_progress_bar=false", "data.num_workers=0", "baselines.enabled=false",
            "data.window_len=128", "data.batch_size=2", "data.samples_per_epoch=8", "trainer.max_steps=4",
            "callbacks.last_checkpoint.every_n_train_steps=1", "task.warmup_steps=0", "task.lr=1e30",
            "torch_threads=1", f"data.cache_dir={tmp_path / 'cache'}", f"output={run}"])
    with pytest.raises(GenossmError, match=r"training stopped at step \d: .* not a finite number .*task.lr=1e\+30"):
        load_workflow("pretrain").train(cfg)
    assert not (run / "model").exists() and not (run / "summary.json").exists()
    for ckpt in (run / "checkpoints").glob("*.ckpt"):  # only the steps before it, whose weights are finite
        state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
        assert all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point()), ckpt


@pytest.fixture
def nan_model(tmp_path):
    """Finite weights whose outputs overflow: every score is NaN (a NaN-weight model gives the same)."""
    model = tiny_lm()
    with torch.no_grad():
        model.layers[0].mixer.out_proj.weight.fill_(3e38)
    return save_tiny_model(tmp_path / "nan_model", model=model)


def test_a_nan_score_is_skipped_with_a_reason(nan_model, tmp_path, monkeypatch, capsys):
    with pysam.FastaFile(str(SLICE)) as fa:
        bases = [fa.fetch("20", p - 1, p).upper() for p in (422000, 422010)]
    vcf = tmp_path / "in.vcf"
    vcf.write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
                   + "".join(f"20\t{p}\tv{p}\t{b}\t{'A' if b != 'A' else 'C'}\t.\t.\t.\n"
                             for p, b in zip((422000, 422010), bases)))
    out = tmp_path / "out.vcf"
    run_cli(["score-variants", f"pretrained={nan_model}", f"fasta={SLICE}", f"variants={vcf}", f"output={out}",
             f"table={tmp_path / 'out.tsv'}", "progress=false"], monkeypatch, tmp_path)
    printed = capsys.readouterr().out
    assert "0 scored" in printed and "not scored, non_finite_score: 2" in printed
    with pysam.VariantFile(str(out)) as vf:
        records = list(vf)
    assert [r.info.get("GENOSSM_SKIP") for r in records] == [("non_finite_score",)] * 2
    assert all("GENOSSM_LLR" not in r.info for r in records)
    table = pd.read_csv(tmp_path / "out.tsv", sep="\t")
    assert list(table["reason"]) == ["non_finite_score"] * 2 and table["llr"].isna().all()


def test_evaluate_refuses_to_report_nan(nan_model, tmp_path, monkeypatch, capsys):
    with pytest.raises(SystemExit) as stop:
        run_cli(["evaluate", f"pretrained={nan_model}", f"fasta={CHLORO}", f"output={tmp_path / 'eval'}",
                 "max_windows=2", "window_len=64", "baselines.enabled=false"], monkeypatch, tmp_path)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "genossm: error:" in err and "not finite numbers" in err
    assert not (tmp_path / "eval" / "evaluation.json").exists()
