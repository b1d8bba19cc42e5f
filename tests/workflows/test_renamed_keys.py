"""Renamed config keys: the old spelling still works for one release, with a deprecation message."""

import pytest
from hydra import compose, initialize_config_dir

from genossm.cli import load_workflow
from genossm.paths import conf_dir


def test_task_seq_len_warmup_becomes_data_window_len_warmup():
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(config_name="pretrain", overrides=["task.seq_len_warmup={start_len: 64, growth: 2}"])
    with pytest.warns(FutureWarning, match="task.seq_len_warmup is deprecated.*data.window_len_warmup"):
        load_workflow("pretrain").renamed_keys(cfg)
    assert "seq_len_warmup" not in cfg.task and cfg.data.window_len_warmup == {"start_len": 64, "growth": 2}
