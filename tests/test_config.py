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
from genossm.tasks.trainer import build_trainer


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
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "KMP_BLOCKTIME", "THP_MEM_ALLOC_ENABLE")}
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["PASSIVE", "0"], done.stderr
    done = subprocess.run([sys.executable, "-c", probe], env={**env, "OMP_WAIT_POLICY": "ACTIVE"},
                          capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["ACTIVE", "0"], done.stderr
    # torch's large CPU tensors on huge pages, unless the user chose; also from a plain import genossm
    for module in ("genossm.cli", "genossm"):
        probe = f"import os, {module}; print(os.environ.get('THP_MEM_ALLOC_ENABLE'))"
        assert subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True,
                              timeout=120).stdout.strip() == "1"
        done = subprocess.run([sys.executable, "-c", probe], env={**env, "THP_MEM_ALLOC_ENABLE": "0"},
                              capture_output=True, text=True, timeout=120)
        assert done.stdout.strip() == "0", done.stderr
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
    assert build_trainer(cfg).precision == "bf16-mixed"
    cfg.precision = "auto"
    assert build_trainer(cfg).precision == "32-true"


# -- size-like options are checked at the config edge; a failed start leaves no run folder ------------------

@pytest.mark.parametrize(
    "workflow, override, message",
    [
        ("score-variants", "batch_size=0", "batch_size=0: expected a whole number >= 1"),  # it used to hang
        ("score-variants", "alleles_per_batch=0", "alleles_per_batch=0: expected a whole number >= 1"),
        ("score-variants", "indel_flank=-1", "indel_flank=-1: expected a whole number >= 0"),
        ("pretrain", "data.window_len=abc", "data.window_len='abc': expected a whole number >= 1"),
        ("pretrain", "data.batch_size=-2", "data.batch_size=-2: expected a whole number >= 1"),
        ("finetune", "train.batch_size=0", "train.batch_size=0: expected a whole number >= 1"),
        ("finetune", "region_len=1.5", "region_len=1.5: expected a whole number >= 1 (or null)"),
        ("finetune", "region_len=longest", "region_len='longest': expected a whole number >= 1 (or null), or auto"),
        ("evaluate", "max_windows=0", "max_windows=0: expected a whole number >= 1 (or null)"),
        ("embed", "batch_size=-1", "batch_size=-1: expected a whole number >= 1"),
        ("score-regions", "batch_size=0", "batch_size=0: expected a whole number >= 1"),
        # checked by what the node builds, named by the node's path
        ("pretrain", "callbacks.history.every_n_steps=0", "callbacks.history.every_n_steps=0: expected a whole number >= 1"),
        ("pretrain", "model.d_model=0", "model: invalid model config: d_model must be a positive integer, got 0"),
    ],
)
def test_bad_sizes_stop_with_one_line_naming_the_key(workflow, override, message, tmp_path):
    import subprocess
    import sys

    run = tmp_path / "run"
    args = [sys.executable, "-m", "genossm.cli", workflow, override, f"output={run}"]
    if workflow in ("score-variants", "evaluate", "embed", "score-regions"):
        args.append(f"pretrained={tmp_path / 'no-model'}")  # never reached: the sizes are checked first
    done = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"genossm: error: {message}" in done.stderr and "Traceback" not in done.stderr
    assert not run.exists(), f"the failed run left {sorted(p.name for p in run.rglob('*'))}"


def test_fsdp_on_a_cpu_machine_gets_the_fsdp_message(tmp_path):
    import subprocess
    import sys

    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    done = subprocess.run([sys.executable, "-m", "genossm.cli", "pretrain", "trainer=fsdp", f"output={tmp_path / 'run'}"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 2 and "trainer=fsdp needs GPUs" in done.stderr
    assert not (tmp_path / "run").exists()


def test_a_failed_start_keeps_an_earlier_run_folder(tmp_path):
    import subprocess
    import sys

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"an earlier run")
    done = subprocess.run([sys.executable, "-m", "genossm.cli", "pretrain", "data.batch_size=0", f"output={run}"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 2
    assert (run / "checkpoints" / "last.ckpt").read_bytes() == b"an earlier run"

@pytest.mark.parametrize("name", sorted(p.stem for p in (conf_dir() / "model").glob("*.yaml")))
def test_every_model_config_composes_into_a_model_config(name):
    """Each conf/model/*.yaml (the larger ones inherit tiny's fields) is a complete, valid BiMambaConfig."""
    from genossm.models import BiMambaConfig

    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(config_name="pretrain", overrides=["~experiment", f"model={name}"])
    config = BiMambaConfig.from_dict(OmegaConf.to_container(cfg.model, resolve=True), source=f"model={name}")
    assert config.to_dict() == OmegaConf.to_container(cfg.model, resolve=True)
    assert set(config.to_dict()) == set(OmegaConf.load(conf_dir() / "model" / "tiny.yaml"))


_TINY = {"d_model": 64, "n_layers": 4, "d_state": 16, "d_conv": 4, "expand": 2, "dt_rank": "auto", "dt_min": 0.001,
         "dt_max": 0.1, "bidirectional": True, "bidirectional_strategy": "add", "tie_directions": True,
         "rc_equivariant": True, "tie_embeddings": True, "gradient_checkpointing": False, "scan_backend": "auto",
         "vocab_size": 8, "norm_eps": 1e-05}
COMPOSED_MODELS = {  # every field, in order, as each model group composed when every file listed them all
    "tiny": _TINY,
    "small": {**_TINY, "d_model": 256, "n_layers": 16},
    "base": {**_TINY, "d_model": 512, "n_layers": 24, "gradient_checkpointing": True},
    "causal_tiny": {**_TINY, "bidirectional": False, "rc_equivariant": False},
}


def test_the_model_configs_are_the_ones_composed_so_far():
    assert sorted(COMPOSED_MODELS) == sorted(p.stem for p in (conf_dir() / "model").glob("*.yaml"))


@pytest.mark.parametrize("name", sorted(COMPOSED_MODELS))
def test_each_model_group_composes_to_every_field(name):
    """The model configs inherit tiny's fields (defaults: [tiny]); composed, each is the same full dict, in the
    same order, whether the group is chosen in a workflow, read by model_config, or composed on its own (as the
    benchmarks do), from the conf folder genossm uses (the checkout's or the installed package's)."""
    expected = COMPOSED_MODELS[name]
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        for workflow in ("pretrain", "finetune"):
            overrides = (["~experiment"] if workflow == "pretrain" else []) + [f"model={name}"]
            composed = OmegaConf.to_container(compose(config_name=workflow, overrides=overrides).model, resolve=True)
            assert list(composed.items()) == list(expected.items()), workflow
    assert list(config.model_config(name).items()) == list(expected.items())
    with initialize_config_dir(config_dir=str(conf_dir() / "model"), version_base="1.3"):
        alone = OmegaConf.to_container(compose(config_name=name), resolve=True)
    assert list(alone.items()) == list(expected.items())


def test_an_experiment_changes_only_its_own_model_fields():
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        demo = compose(config_name="pretrain").model
        human_1m = compose(config_name="pretrain", overrides=["experiment=human_1m"]).model
        bacteria = compose(config_name="pretrain", overrides=["experiment=bacteria", "model.n_layers=2"]).model
    assert OmegaConf.to_container(demo) == {**COMPOSED_MODELS["tiny"], "rc_equivariant": False}
    assert OmegaConf.to_container(human_1m) == {**COMPOSED_MODELS["small"], "gradient_checkpointing": True}
    assert OmegaConf.to_container(bacteria) == {**COMPOSED_MODELS["tiny"], "d_model": 128, "n_layers": 2,
                                                "rc_equivariant": False}


@pytest.mark.parametrize("name", sorted(p.stem for p in (conf_dir() / "data").glob("*.yaml")))
def test_every_data_config_composes_with_every_key(name):
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(config_name="pretrain", overrides=["~experiment", f"data={name}"])
    custom = OmegaConf.load(conf_dir() / "data" / "custom.yaml")
    assert set(cfg.data) == set(custom.data) and cfg.data._target_ == "genossm.data.datamodule.GenomeDataModule"
