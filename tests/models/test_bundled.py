"""The bundled reference models load by name, match their config and model card, and score the card's check
window to the bits per base the card prints (so the card cannot drift from the weights)."""

import json
import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from genossm.cli import load_workflow, models_table
from genossm.models import bundled_models, from_pretrained
from genossm.paths import conf_dir, data_dir

NAMES = ["bacteria", "human_chr20"]
CHECK = re.compile(r"Bits per base on the bundled `data/(\S+)`, first (\d+) evenly spread windows, seed 0: "
                   r"\*\*([0-9.]+)\*\*")
PARAMS = re.compile(r"\| parameters \| ([0-9,]+) ")


def test_both_models_are_bundled_small_and_listed():
    models = bundled_models()
    assert set(NAMES) <= set(models)
    total = sum(p.stat().st_size for name in NAMES for p in models[name].iterdir() if p.is_file())
    assert total < 20e6, f"bundled models take {total / 1e6:.1f} MB"
    listing = models_table()
    for name in NAMES:
        assert f"bundled:{name}" in listing and str(models[name] / "README.md") in listing


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_bundled_model_matches_its_card(name, tmp_path):
    folder = bundled_models()[name]
    card = (folder / "README.md").read_text()
    meta = json.loads((folder / "config.json").read_text())
    model = from_pretrained(f"bundled:{name}")
    assert model.config.to_dict() == meta["model_config"]
    assert model.num_parameters() == int(PARAMS.search(card).group(1).replace(",", ""))
    assert meta["extra"]["held_out"] and meta["extra"]["fasta_sha256"] in card
    assert all(str(data_dir().parent) not in v for v in map(str, meta["extra"].values()))  # no local paths
    fasta, windows, bpb = CHECK.search(card).groups()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(config_name="evaluate", overrides=[
            f"pretrained=bundled:{name}", f"fasta={data_dir() / fasta}", f"max_windows={windows}",
            "baselines.enabled=false", f"output={tmp_path / 'out'}", f"cache_dir={tmp_path / 'cache'}",
            "torch_threads=1"])
    result = load_workflow("evaluate").evaluate(cfg)
    assert result["model"]["bpb"] == pytest.approx(float(bpb), abs=0.01)
    assert result["window_len"] == meta["extra"]["train_window_len"]


def test_unknown_bundled_name_lists_the_known_ones():
    from genossm.errors import GenossmError

    with pytest.raises(GenossmError, match="bundled:bacteria"):
        from_pretrained("bundled:nope")
