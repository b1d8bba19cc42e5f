"""genossm.config: CPU threads, the OpenMP wait policy, the resolvers registered once, precision reaching the Trainer."""

import os
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from genossm import config
from genossm.errors import GenossmError
from genossm.paths import conf_dir


def test_auto_threads_follow_affinity_workers_and_ranks(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(config, "available_cores", lambda: 8)
    assert config.cpu_threads("auto") == 8
    assert config.cpu_threads("auto", num_workers=3) == 5
    assert config.cpu_threads("auto", num_workers=2, processes=2) == 2
    assert config.cpu_threads("auto", num_workers=20) == 1
    monkeypatch.setattr(config, "available_cores", lambda: 256)
    assert config.cpu_threads("auto") == config.MAX_AUTO_THREADS
    assert config.cpu_threads(3) == 3 and config.cpu_threads("2") == 2 and config.cpu_threads(None) is None
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert config.cpu_threads("auto") == 1
    with pytest.raises(GenossmError, match="torch_threads"):
        config.cpu_threads("many")
    with pytest.raises(GenossmError, match="torch_threads must be >= 1"):
        config.cpu_threads(0)


def test_available_cores_is_the_affinity_mask():
    assert config.available_cores() == len(os.sched_getaffinity(0))


def test_the_command_sets_a_passive_wait_policy_unless_the_user_chose_one():
    probe = "import os, genossm.cli; print(os.environ['OMP_WAIT_POLICY'], os.environ['KMP_BLOCKTIME'])"
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "KMP_BLOCKTIME")}
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["PASSIVE", "0"], done.stderr
    done = subprocess.run([sys.executable, "-c", probe], env={**env, "OMP_WAIT_POLICY": "ACTIVE"},
                          capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["ACTIVE", "0"], done.stderr
    # and genossm.cli sets it before torch is imported
    order = "import sys, genossm.cli; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", order], env=env, capture_output=True, text=True,
                          timeout=120).stdout.strip() == "False"


def test_resolvers_are_registered_by_importing_genossm():
    import genossm  # noqa: F401

    for name in ("bundled", "run_id", "or_default"):
        assert OmegaConf.has_resolver(name)
    assert OmegaConf.create({"x": "${or_default:null,b}", "y": "${or_default:a,b}"}) == {"x": "b", "y": "a"}


@pytest.mark.parametrize("workflow", ["pretrain", "evaluate", "score_variants", "finetune", "score_regions", "embed"])
def test_every_workflow_takes_torch_threads_and_precision(workflow):
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(config_name=workflow, overrides=["torch_threads=2"])
    assert cfg.torch_threads == 2
    if workflow != "pretrain":  # pretraining sets trainer.precision itself
        assert cfg.precision == "auto"


def test_precision_reaches_the_trainer(tmp_path):
    cfg = OmegaConf.create({"precision": "bf16-mixed", "trainer": {"_target_": "lightning.pytorch.Trainer",
                            "accelerator": "cpu", "devices": 1, "logger": False, "default_root_dir": str(tmp_path)}})
    assert config.build_trainer(cfg).precision == "bf16-mixed"
    cfg.precision = "auto"
    assert config.build_trainer(cfg).precision == "32-true"
