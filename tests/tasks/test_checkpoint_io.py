"""A checkpoint save that fails part-way (full disk) keeps the previous checkpoint and stops with one clear line."""

import errno

import pytest
import torch

from genossm.errors import GenossmError
from genossm.tasks import checkpoint_io
from genossm.tasks.checkpoint_io import AtomicCheckpointIO


def failing_save(real=torch.save):
    def save(obj, handle):
        handle.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")
    return save


def test_a_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "best.ckpt"
    io.save_checkpoint({"step": 1, "w": torch.arange(4.0)}, path)
    assert io.load_checkpoint(path)["step"] == 1
    monkeypatch.setattr(checkpoint_io.torch, "save", failing_save())
    with pytest.raises(GenossmError, match="best.ckpt: cannot write the output: No space left on device"):
        io.save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert io.load_checkpoint(path)["step"] == 1  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.ckpt"]  # no temporary file left


def test_pretraining_stops_cleanly_when_a_save_fails(tmp_path, monkeypatch):
    from hydra import compose, initialize_config_dir

    from genossm.cli import load_workflow
    from genossm.paths import conf_dir

    real, calls = torch.save, []

    def second_save_fails(obj, handle):
        calls.append(1)
        if len(calls) >= 2:
            handle.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        real(obj, handle)

    monkeypatch.setattr(checkpoint_io.torch, "save", second_save_fails)
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(config_name="pretrain", overrides=[
            "model.d_model=16", "model.n_layers=1", "data.window_len=128", "data.batch_size=2", "data.samples_per_epoch=8",
            "trainer.max_steps=3", "callbacks.last_checkpoint.every_n_train_steps=1", "trainer.enable_progress_bar=false",
            "baselines.enabled=false", f"output={tmp_path / 'run'}", "torch_threads=1"])
    with pytest.raises(GenossmError, match="last.ckpt: cannot write the output"):
        load_workflow("pretrain").train(cfg)
    monkeypatch.undo()
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 1  # the first save, whole
    assert not [p for p in (tmp_path / "run" / "checkpoints").iterdir() if "tmp" in p.name]
