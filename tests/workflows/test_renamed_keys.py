"""Renamed config keys: the old spelling still works for one release, with a deprecation message."""

import json
import warnings

import pytest
from hydra import compose, initialize_config_dir

from genossm.cli import load_workflow
from genossm.config import renamed_keys
from genossm.paths import conf_dir

from helpers import run_cli, save_tiny_model

def test_task_seq_len_warmup_becomes_data_window_len_warmup():
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(config_name="pretrain", overrides=["task.seq_len_warmup={start_len: 64, growth: 2}"])
    pretrain = load_workflow("pretrain")
    with pytest.warns(FutureWarning, match="task.seq_len_warmup is deprecated.*data.window_len_warmup"):
        renamed_keys(cfg, pretrain.RENAMED)
    assert "seq_len_warmup" not in cfg.task and cfg.data.window_len_warmup == {"start_len": 64, "growth": 2}


def test_finetune_task_becomes_label_type():
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        old = compose(config_name="finetune", overrides=["task=regression"])
        new = compose(config_name="finetune", overrides=["label_type=regression"])
    with pytest.warns(FutureWarning, match="task is deprecated.*label_type"):
        renamed_keys(old, load_workflow("finetune").RENAMED)
    renamed_keys(new, load_workflow("finetune").RENAMED)
    assert old == new and old.label_type == "regression" and "task" not in old


def test_score_variants_mode_and_batch_size_become_scan_and_alleles_per_batch():
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        old = compose(config_name="score_variants", overrides=["mode=saturation", "batch_size=5"])
        new = compose(config_name="score_variants", overrides=["scan=saturation", "alleles_per_batch=5"])
    renames = load_workflow("score-variants").RENAMED
    with pytest.warns(FutureWarning) as caught:
        spelled = renamed_keys(old, renames)
    assert sorted(str(w.message) for w in caught) == [
        "batch_size is deprecated and will be removed in the next release: use alleles_per_batch",
        "mode is deprecated and will be removed in the next release: use scan"]
    assert spelled == {"scan": "mode", "alleles_per_batch": "batch_size"}
    assert renamed_keys(new, renames) == {}
    assert old == new and old.scan == "saturation" and old.alleles_per_batch == 5
    assert "mode" not in old and "batch_size" not in old


def test_finetune_mode_and_split_mode_become_method_and_split_by():
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        old = compose(config_name="finetune", overrides=["mode=probe", "split.mode=contig"])
        new = compose(config_name="finetune", overrides=["method=probe", "split.by=contig"])
        default = compose(config_name="finetune")
    renames = load_workflow("finetune").RENAMED
    with pytest.warns(FutureWarning, match=r"^split\.mode is deprecated.*: use split\.by$"):
        with pytest.warns(FutureWarning, match=r"^mode is deprecated.*: use method$"):
            renamed_keys(old, renames)
    renamed_keys(new, renames)
    assert old == new and old.method == "probe" and old.split.by == "contig"
    assert "mode" not in old and "mode" not in old.split
    renamed_keys(default, renames)
    assert default.method == "finetune" and default.split.by == "auto"


def test_a_bad_size_is_named_as_the_user_spelled_it():
    from genossm.errors import GenossmError

    options = load_workflow("score-variants").ScoreVariantsOptions

    for key in ("batch_size", "alleles_per_batch"):
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            cfg = compose(config_name="score_variants", overrides=[f"{key}=0"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            spelled = renamed_keys(cfg, load_workflow("score-variants").RENAMED)
        with pytest.raises(GenossmError, match=rf"^{key}=0: expected a whole number >= 1$"):
            options.from_config(cfg, spelled=spelled)


def test_score_variants_with_the_old_keys_writes_the_same_file(bundled_data, tmp_path, monkeypatch):
    model = save_tiny_model(tmp_path / "model")
    common = ["score-variants", f"pretrained={model}", f"fasta={bundled_data / 'variants_chr20_slice.fa.gz'}",
              "region=20:421801-421812", "window_len=32", "emb_dist=false", "progress=false"]
    with pytest.warns(FutureWarning, match="mode is deprecated"):
        run_cli([*common, "mode=saturation", "batch_size=5", "output=old.tsv"], monkeypatch, tmp_path)
    run_cli([*common, "scan=saturation", "alleles_per_batch=5", "output=new.tsv"], monkeypatch, tmp_path)
    old, new = (tmp_path / "old.tsv").read_bytes(), (tmp_path / "new.tsv").read_bytes()
    assert old == new and len(old.splitlines()) == 1 + 12 * 3


def test_finetune_with_the_old_keys_writes_the_same_outputs(tmp_path, monkeypatch):
    model = save_tiny_model(tmp_path / "model")
    common = ["finetune", f"pretrained={model}", "kmer.enabled=false", "trainer.enable_progress_bar=false"]
    with pytest.warns(FutureWarning, match="split.mode is deprecated"):
        run_cli([*common, "mode=probe", "split.mode=random", f"output={tmp_path / 'old'}"], monkeypatch, tmp_path)
    run_cli([*common, "method=probe", "split.by=random", f"output={tmp_path / 'new'}"], monkeypatch, tmp_path)
    for name in ("predictions.tsv", "metrics.json"):
        assert (tmp_path / "old" / name).read_bytes() == (tmp_path / "new" / name).read_bytes(), name
    assert json.loads((tmp_path / "new" / "metrics.json").read_text())["mode"] == "probe"
    assert (tmp_path / "old" / "config.yaml").read_text() == (tmp_path / "new" / "config.yaml").read_text().replace(
        str(tmp_path / "new"), str(tmp_path / "old"))


BOTH_SPELLINGS = [
    ("pretrain", "task.seq_len_warmup={start_len: 64, growth: 2}", "data.window_len_warmup={start_len: 32, growth: 2}",
     "task.seq_len_warmup", "data.window_len_warmup"),
    ("finetune", "task=regression", "label_type=binary", "task", "label_type"),
    ("finetune", "mode=probe", "method=head", "mode", "method"),
    ("finetune", "split.mode=contig", "split.by=random", "split.mode", "split.by"),
    ("score-variants", "mode=saturation", "scan=variants", "mode", "scan"),
    ("score-variants", "batch_size=8", "alleles_per_batch=0", "batch_size", "alleles_per_batch"),
]


@pytest.mark.parametrize("workflow, old, new, old_key, new_key", BOTH_SPELLINGS)
@pytest.mark.parametrize("order", ["old first", "new first"])
def test_an_old_spelling_and_its_new_key_that_differ_are_refused(workflow, old, new, old_key, new_key, order,
                                                                 tmp_path, monkeypatch, capsys):
    """The old spelling silently won: task=regression label_type=binary trained a regression."""
    pair = [old, new] if order == "old first" else [new, old]
    with pytest.raises(SystemExit) as stop:
        run_cli([workflow, *pair, f"output={tmp_path / 'out'}"], monkeypatch, tmp_path)
    err = capsys.readouterr().err
    assert stop.value.code == 2, err
    assert err.startswith("genossm: error:") and "Traceback" not in err
    assert f"{old_key}=" in err and f"{new_key}=" in err and "both given" in err
    assert not (tmp_path / "out").exists()


def test_an_old_spelling_and_its_new_key_that_agree_are_accepted():
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(config_name="finetune", overrides=["task=regression", "label_type=regression"])
    with pytest.warns(FutureWarning, match="task is deprecated"):
        renamed_keys(cfg, load_workflow("finetune").RENAMED, given={"task", "label_type"})
    assert cfg.label_type == "regression" and "task" not in cfg
