"""save_pretrained / from_pretrained / load_extra: folders, Lightning checkpoints, clear errors."""

import json
import subprocess
import sys
import unittest.mock

import pytest
import torch

from conftest import tiny
from genossm.errors import GenossmError
from genossm.models import BiMambaLM, from_pretrained, load_extra, save_pretrained


@pytest.fixture
def model():
    torch.manual_seed(0)
    m = BiMambaLM(tiny(rc_equivariant=True, tie_directions=False, bidirectional_strategy="proj")).eval()
    with torch.no_grad():  # make every tensor non-default so a lost tensor shows
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return m


def test_save_load_round_trip_is_bit_identical(model, tmp_path):
    folder = save_pretrained(model, tmp_path / "m", extra={"train_window_len": 2048})
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    meta = json.loads((folder / "config.json").read_text())
    assert meta["tokenizer"]["vocab"][:4] == ["A", "C", "G", "T"]
    loaded = from_pretrained(folder)
    assert loaded.config == model.config and not loaded.training
    for (k, v), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k
    x = torch.randint(0, 5, (2, 21))
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert load_extra(folder) == {"train_window_len": 2048}


def test_lightning_checkpoint_loads(model, tmp_path):
    omegaconf = pytest.importorskip("omegaconf")
    ckpt = tmp_path / "last.ckpt"
    torch.save({
        "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()} | {"other.thing": torch.ones(1)},
        # an OmegaConf container among the hyper-parameters needs the full unpickler
        "hyper_parameters": {"model_config": model.config.to_dict(), "lr": 1e-3,
                             "data": omegaconf.OmegaConf.create({"window_len": 1024}), "extra": {"k": 1}},
    }, ckpt)
    loaded = from_pretrained(ckpt)
    x = torch.randint(0, 5, (1, 15))
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert load_extra(ckpt) == {"k": 1}


def test_the_checkpoint_block_hub_writes_is_the_one_it_reads(model, tmp_path):
    from genossm.models.hub import read_checkpoint, write_checkpoint_block

    checkpoint = {"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                  "hyper_parameters": {"lr": 1e-3}}
    write_checkpoint_block(checkpoint, model.config.to_dict(), {"train_window_len": 64})
    assert checkpoint["hyper_parameters"]["lr"] == 1e-3  # the task's own hyper-parameters stay
    torch.save(checkpoint, tmp_path / "a.ckpt")
    config, weights, extra = read_checkpoint(tmp_path / "a.ckpt", "cpu")
    assert config == model.config.to_dict() and extra == {"train_window_len": 64}
    assert weights.keys() == model.state_dict().keys()
    with pytest.raises(GenossmError, match=r"weights are not under 'model\.'"):
        write_checkpoint_block({"state_dict": {"backbone.w": torch.ones(1)}}, model.config.to_dict())


def test_a_pretraining_checkpoint_carries_the_block(tmp_path):
    """A checkpoint saved by Lightning from the pretraining task goes through hub's writer (on_save_checkpoint)."""
    import lightning as L

    from genossm.models.hub import read_checkpoint
    from genossm.tasks import pretrain

    calls = []
    original = pretrain.write_checkpoint_block

    def spy(checkpoint, model_config, extra=None):
        calls.append(dict(extra or {}))
        return original(checkpoint, model_config, extra)

    task = pretrain.MaskedLM(tiny().to_dict(), extra={"train_window_len": 32})
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, max_steps=0)
    trainer.strategy.connect(task)
    with unittest.mock.patch.object(pretrain, "write_checkpoint_block", spy):
        trainer.save_checkpoint(tmp_path / "t.ckpt")
    assert calls == [{"train_window_len": 32}]
    config, weights, extra = read_checkpoint(tmp_path / "t.ckpt", "cpu")
    assert config == tiny().to_dict() and extra == {"train_window_len": 32}
    assert weights.keys() == task.model.state_dict().keys()


def test_mismatched_config_names_the_file_and_the_tensor(model, tmp_path):
    folder = save_pretrained(model, tmp_path / "m")
    meta = json.loads((folder / "config.json").read_text())
    meta["model_config"]["d_state"] = 8
    (folder / "config.json").write_text(json.dumps(meta))
    with pytest.raises(GenossmError, match=r"model\.safetensors: weights do not match the model config: .*shape "
                                           r"mismatch.*layers\.0\.mixer\.branches\.0\.x_proj\.weight"):
        from_pretrained(folder)
    meta["model_config"]["d_state"] = 4
    meta["model_config"]["n_layers"] = 3
    (folder / "config.json").write_text(json.dumps(meta))
    with pytest.raises(GenossmError, match=r"missing tensor\(s\), first: layers\.2\."):
        from_pretrained(folder)
    meta["model_config"]["n_layers"] = 1
    (folder / "config.json").write_text(json.dumps(meta))
    with pytest.raises(GenossmError, match=r"unexpected tensor\(s\), first: layers\.1\."):
        from_pretrained(folder)


def test_broken_inputs_raise_clear_errors(model, tmp_path):
    with pytest.raises(GenossmError, match="no such model folder"):
        from_pretrained(tmp_path / "absent")
    folder = save_pretrained(model, tmp_path / "m")
    (folder / "config.json").write_text("{not json")
    with pytest.raises(GenossmError, match=r"config\.json: not valid JSON"):
        from_pretrained(folder)
    (folder / "config.json").write_text(json.dumps({"model_config": {"d_model": 16, "layers": 2}}))
    with pytest.raises(GenossmError, match=r"config\.json: unknown model config field\(s\) \['layers'\]"):
        from_pretrained(folder)
    (folder / "config.json").write_text(json.dumps({"model_config": {}, "tokenizer": {"vocab": ["A", "B"]}}))
    with pytest.raises(GenossmError, match="vocabulary"):
        from_pretrained(folder)
    (folder / "config.json").unlink()
    with pytest.raises(GenossmError, match=r"config\.json: not found"):
        from_pretrained(folder)
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(GenossmError, match="bad.ckpt: cannot read"):
        from_pretrained(bad)
    torch.save({"state_dict": {}}, bad)
    with pytest.raises(GenossmError, match=r"bad.ckpt: no hyper_parameters\['model_config'\]"):
        from_pretrained(bad)


def test_loading_imports_neither_lightning_nor_hydra(model, tmp_path):
    folder = save_pretrained(model, tmp_path / "m")
    code = ("import sys; from genossm.models import from_pretrained; from_pretrained(sys.argv[1]); "
            "bad = [m for m in ('lightning', 'pytorch_lightning', 'hydra') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code, str(folder)], check=True)
