"""Renamed config keys: the old spelling still works for one release, with a deprecation message."""

import pytest
from hydra import compose, initialize_config_dir

from genossm.cli import load_workflow
from genossm.config import renamed_keys
from genossm.paths import conf_dir


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
