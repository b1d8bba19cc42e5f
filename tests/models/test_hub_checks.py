"""What loading checks in a model folder: config types, weights' dtype and finiteness, the bundled checksum, a
saved scan backend that cannot run here; and `genossm models` listing the models it can, whatever is damaged."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import tiny
from genossm.cli import models_table
from genossm.errors import GenossmError
from genossm.models import BiMambaLM, bundled_models, from_pretrained, save_pretrained
from genossm.models.hub import CHECKSUM_NAME, write_checksum


@pytest.fixture
def folder(tmp_path):
    torch.manual_seed(0)
    return save_pretrained(BiMambaLM(tiny()), tmp_path / "m")


def edit_config(folder, **changes):
    meta = json.loads((folder / "config.json").read_text())
    meta["model_config"].update(changes)
    (folder / "config.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("field,value,message", [
    ("rc_equivariant", "false", "rc_equivariant must be true or false, got 'false'"),
    ("tie_directions", 1, "tie_directions must be true or false, got 1"),
    ("d_model", "64", "d_model must be a positive integer, got '64'"),
    ("dt_min", "0.001", "dt_min must be a positive number, got '0.001'"),
    ("norm_eps", None, "norm_eps must be a positive number, got None"),
    ("token_ids", [0, 1], "token_ids must be 8 embedding rows"),
])
def test_config_values_of_the_wrong_type_are_named_with_the_file(folder, field, value, message):
    edit_config(folder, **{field: value})
    with pytest.raises(GenossmError) as err:
        from_pretrained(folder)
    assert message in str(err.value) and str(folder / "config.json") in str(err.value)


@pytest.mark.parametrize("damage,message", [
    ("nan", "hold NaN or infinite values, first: layers.0.mixer.out_proj.weight"),
    ("inf", "hold NaN or infinite values"),
    ("integer", "are not floating point, first: norm_f.weight (torch.int64)"),
])
def test_weights_must_be_finite_floats(folder, damage, message):
    path = folder / "model.safetensors"
    tensors = load_file(str(path))
    if damage == "nan":
        tensors["layers.0.mixer.out_proj.weight"][0, 0] = float("nan")
    elif damage == "inf":
        tensors["norm_f.weight"][1] = float("inf")
    else:
        tensors["norm_f.weight"] = torch.ones(16, dtype=torch.int64)
    save_file(tensors, str(path))
    with pytest.raises(GenossmError, match=message.replace("(", r"\(").replace(")", r"\)")):
        from_pretrained(folder)


def test_a_checksum_catches_flipped_bytes(folder):
    write_checksum(folder)
    from_pretrained(folder)  # intact: loads
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-5] ^= 0x10  # one bit of one weight: still a valid file with finite values
    (folder / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(GenossmError, match=f"its sha256 differs from {CHECKSUM_NAME}; the file is damaged"):
        from_pretrained(folder)


def test_bundled_models_carry_their_checksum():
    for name, folder in bundled_models().items():
        assert (folder / CHECKSUM_NAME).is_file(), name
        from_pretrained(f"bundled:{name}")  # and it matches


@pytest.mark.parametrize("backend", ["triton", "cpu"])
def test_a_saved_backend_is_a_preference(folder, backend, monkeypatch, caplog):
    import genossm.ops.selective_scan as scan

    monkeypatch.setattr(scan, "_triton_usable", lambda tensor: False)  # as on a machine without CUDA / Triton
    monkeypatch.setattr(scan, "_cpu_usable", lambda tensor, state: False)  # as without the compiled kernel
    edit_config(folder, scan_backend=backend)
    with caplog.at_level("WARNING"):
        model = from_pretrained(folder)
    assert model.config.scan_backend == "auto"
    assert f"saved with scan_backend={backend}, which cannot run here" in caplog.text
    model(torch.randint(0, 4, (1, 12)))  # and it runs


def test_models_lists_the_healthy_models_beside_a_damaged_one(tmp_path, monkeypatch):
    import genossm.models as models

    real = bundled_models()
    broken = tmp_path / "broken"
    shutil.copytree(real["bacteria"], broken)
    (broken / "config.json").write_text("{ not json")
    monkeypatch.setattr(models, "bundled_models", lambda: {**real, "broken": broken})
    listing = models_table()
    assert "bundled:bacteria" in listing and "bundled:human_chr20" in listing
    assert "bundled:broken" in listing and "DAMAGED, cannot be used:" in listing and "not valid JSON" in listing


def test_models_lists_the_hub_checkpoints_and_the_cache(tmp_path, monkeypatch):
    import huggingface_hub

    repo = "kuleshov-group/PlantCaduceus_l20"

    def cached(repo_id, filename, **kwargs):
        return f"/cache/{filename}" if repo_id == repo and filename in ("config.json", "pytorch_model.bin") else None

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", cached)
    lines = models_table().splitlines()
    row = next(line for line in lines if f"hf:{repo} " in line)
    assert "20,870,016" in row and "512 bp" in row and row.rstrip().endswith("cached")
    other = next(line for line in lines if "hf:kuleshov-group/caduceus-ps_seqlen-131k" in line)
    assert "131 kb" in other and other.rstrip().endswith("not downloaded")
