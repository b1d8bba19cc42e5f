"""A run folder's results are never lost: a resume that cannot continue (another model size, window, genome or
learning rate; a checkpoint of another size, a model folder, a JSON file, a truncated file) stops with one
message before anything is written; a resume killed during the restore leaves the history as it was; starting
over needs resume=restart, which keeps the earlier results aside; another run's checkpoint is not continued
into a folder that holds a run."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from genossm.cli import load_workflow
from genossm.errors import GenossmError

from helpers import compose_pretrain

REPO = Path(__file__).resolve().parents[2]
CHLORO = REPO / "data" / "athaliana_chloroplast.fa"
OTHER = REPO / "data" / "multi_contig.fa"

train = load_workflow("pretrain").train
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(tmp_path: Path) -> list[str]:
    return ["~experiment", "data=custom", f"fasta={CHLORO}", "model=tiny", "model.d_model=16", "model.n_layers=1",
            "model.gradient_checkpointing=false", "trainer=cpu", "trainer.enable_progress_bar=false",
            "data.num_workers=0", "baselines.enabled=false", "data.window_len=128", "data.batch_size=2",
            "data.samples_per_epoch=4", "trainer.max_steps=2", "callbacks.last_checkpoint.every_n_train_steps=1",
            "trainer.log_every_n_steps=1", "data.max_eval_windows=2", "torch_threads=1",
            f"data.cache_dir={tmp_path / 'cache'}"]


def run(tmp_path, folder, *extra):
    return train(compose_pretrain([*tiny(tmp_path), f"output={folder}", *extra]))


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def finished(tmp_path) -> Path:
    folder = tmp_path / "run"
    run(tmp_path, folder)
    assert (folder / "logs" / "metrics.csv").is_file() and (folder / "checkpoints" / "last.ckpt").is_file()
    return folder


@pytest.mark.parametrize("override, named", [
    ("model.d_model=32", "model.d_model"),
    ("data.window_len=64", "data.window_len"),
    ("task.lr=0.5", "task.lr"),
    ("model.rc_equivariant=false", "model.rc_equivariant"),
    (f"fasta={OTHER}", "fasta"),
])
def test_a_resume_that_would_change_the_run_is_refused_and_loses_nothing(tmp_path, finished, override, named):
    before = snapshot(finished)
    with pytest.raises(GenossmError, match=rf"{named}: .* in the run, .* now"):
        run(tmp_path, finished, override, "trainer.max_steps=3")
    assert snapshot(finished) == before


def test_a_resume_from_a_checkpoint_that_cannot_be_used_loses_nothing(tmp_path, finished):
    bigger = tmp_path / "bigger"
    run(tmp_path, bigger, "model.d_model=32")
    bad_json = tmp_path / "run.json"
    bad_json.write_text('{"not": "a checkpoint"}')
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes((finished / "checkpoints" / "last.ckpt").read_bytes()[:5000])
    before = snapshot(finished)
    cases = [(bigger / "checkpoints" / "last.ckpt", "holds an earlier run"), (bigger / "model", "is a folder"),
             (bad_json, "holds an earlier run"), (truncated, "holds an earlier run")]
    for resume, message in cases:
        with pytest.raises(GenossmError, match=message):
            run(tmp_path, finished, f"resume={resume}", "trainer.max_steps=3")
        assert snapshot(finished) == before, resume
    for resume in (bad_json, truncated):  # into a new folder: the file is named, nothing is written
        with pytest.raises(GenossmError, match=f"resume={resume}: not a readable training checkpoint"):
            run(tmp_path, tmp_path / "new", f"resume={resume}", "trainer.max_steps=3")
        assert not (tmp_path / "new" / "checkpoints").exists()
    # a truncated last.ckpt of the run itself: named, the history kept
    (finished / "checkpoints" / "last.ckpt").write_bytes(truncated.read_bytes())
    before = snapshot(finished)
    with pytest.raises(GenossmError, match="last.ckpt: not a readable training checkpoint"):
        run(tmp_path, finished, "trainer.max_steps=3")
    assert snapshot(finished) == before
    # another run's checkpoint of the same settings continues into a new folder
    summary = run(tmp_path, tmp_path / "fresh", f"resume={bigger / 'checkpoints' / 'last.ckpt'}", "model.d_model=32",
                  "trainer.max_steps=3")
    assert summary["global_step"] == 3


def test_starting_over_needs_resume_restart_which_keeps_the_earlier_results(tmp_path, finished):
    before = snapshot(finished)
    with pytest.raises(GenossmError, match="resume=false: output=.* holds an earlier run .*resume=restart"):
        run(tmp_path, finished, "resume=false")
    assert snapshot(finished) == before
    run(tmp_path, finished, "resume=restart", "seed=5")
    kept = list((finished / "previous").iterdir())
    assert len(kept) == 1
    assert snapshot(kept[0]) == {k: v for k, v in before.items() if not k.startswith(".hydra")}
    assert (finished / "checkpoints" / "last.ckpt").read_bytes() != before["checkpoints/last.ckpt"]


def test_a_run_extended_keeps_its_earlier_rows(tmp_path, finished, capsys):
    rows = list(csv.DictReader(open(finished / "logs" / "metrics.csv")))
    summary = run(tmp_path, finished, "trainer.max_steps=3")
    assert summary["global_step"] == 3
    assert "schedule now ends at step 3 (the run had 2)" in capsys.readouterr().out
    after = list(csv.DictReader(open(finished / "logs" / "metrics.csv")))
    train_steps = sorted(int(r["step"]) for r in after if r.get("train/loss"))
    assert train_steps == [0, 1, 2]
    first = {k: v for k, v in rows[1].items() if v}
    assert any({k: v for k, v in r.items() if v} == first for r in after)  # the earlier text as written


def test_a_resume_killed_during_the_restore_keeps_the_history(tmp_path, finished):
    """kill -9 between loading the weights and the first step (Lightning had deleted metrics.csv by then)."""
    before = snapshot(finished)
    script = tmp_path / "killed.py"
    script.write_text(textwrap.dedent(f"""
        import os, signal, sys
        sys.argv = [sys.argv[0]] + {[*tiny(tmp_path), f"output={finished}", "trainer.max_steps=3"]!r}
        from lightning.pytorch.trainer.connectors.checkpoint_connector import _CheckpointConnector
        _CheckpointConnector.restore_training_state = lambda self: os.kill(os.getpid(), signal.SIGKILL)
        from genossm.cli import main
        main(["pretrain", *sys.argv[1:]])
    """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == -9, proc.stderr[-3000:]
    after = snapshot(finished)
    for name in ("logs/metrics.csv", "checkpoints/last.ckpt", "checkpoints/best.ckpt", "summary.json",
                 "model/model.safetensors"):
        assert after[name] == before[name], name


def test_an_unreadable_metrics_file_is_kept(tmp_path, finished):
    metrics = finished / "logs" / "metrics.csv"
    metrics.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(GenossmError):
        run(tmp_path, finished, "trainer.max_steps=3", "model.d_model=8")
    assert metrics.read_bytes() == b"\xff\xfe\x00garbage"  # a failed resume leaves it alone
    run(tmp_path, finished, "trainer.max_steps=3")
    assert (finished / "logs" / "metrics.unreadable.csv").read_bytes() == b"\xff\xfe\x00garbage"
    assert list(csv.DictReader(open(metrics)))


def test_cli_message_is_one_line(tmp_path, finished):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "genossm.cli", "pretrain", *tiny(tmp_path), f"output={finished}",
                           "model.d_model=32"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 2
    assert "genossm: error:" in proc.stderr and "model.d_model: 16 in the run, 32 now" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert (finished / "logs" / "metrics.csv").is_file()
    shutil.rmtree(tmp_path / "cache", ignore_errors=True)
