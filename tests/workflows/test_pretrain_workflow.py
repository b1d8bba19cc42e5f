"""The pretrain workflow on the real configs: every experiment with fast_dev_run, exact resume, the SLURM
launcher's submission, and bad values failing before training."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import MissingConfigException
from omegaconf import OmegaConf

from genossm.errors import GenossmError
from genossm.models import from_pretrained, load_extra
from genossm.paths import conf_dir
from genossm.cli import load_workflow

from helpers import compose_pretrain

run_pretraining = load_workflow("pretrain").train

REPO = Path(__file__).resolve().parents[2]
CHR20_SLICE = REPO / "data" / "human_chr20_slice.fa.gz"
CHLORO = REPO / "data" / "athaliana_chloroplast.fa"

# small and quick everywhere; the experiment still chooses data, trainer settings, task and callbacks
TINY = [
    "model=tiny", "model.d_model=16", "model.n_layers=1", "model.gradient_checkpointing=false",
    "trainer=cpu", "trainer.enable_progress_bar=false", "data.num_workers=0", "baselines.max_order=3",
    "logger=csv",
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.slow
@pytest.mark.parametrize("experiment", ["demo", "human_chr20_131k", "human_1m", "bacteria", "human_chr20"])
def test_every_experiment_fast_dev_run(experiment, tmp_path, capsys):
    overrides = [f"experiment={experiment}", *TINY, f"output={tmp_path / 'run'}", "trainer.fast_dev_run=true",
                 "data.window_len=256", "data.batch_size=2", "data.max_eval_windows=4"]
    if experiment == "bacteria":
        overrides.append(f"fasta={CHLORO}")
    elif experiment != "demo":
        overrides.append(f"fasta={CHR20_SLICE}")
    cfg = compose_pretrain(overrides)
    summary = run_pretraining(cfg)
    run = tmp_path / "run"
    assert summary["global_step"] == 1
    assert 0.0 < summary["val"]["bpb"] < 4.0
    saved = (run / "config.yaml").read_text()
    config = OmegaConf.create(saved)  # the composed config, resolved, beside the outputs
    assert "${" not in saved and config.output == str(run) and config.model.d_model == 16
    assert config.data.window_len == 256 and config.trainer.fast_dev_run is True
    assert (run / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (run / "training_curves.png").stat().st_size > 1000
    model = from_pretrained(run / "model")
    assert model.config.d_model == 16
    assert load_extra(run / "model")["train_window_len"] == 256
    out = capsys.readouterr().out
    assert "composition entropy" in out and "best Markov" in out and str(run / "model") in out


def test_fast_dev_run_on_a_list_of_fastas(tmp_path, capsys):
    """data=custom 'fasta=[plain.fa,bgzip.fa.gz]': one genome from two files, recorded with the model."""
    run = tmp_path / "run"
    cfg = compose_pretrain(["~experiment", "data=custom", f"fasta=[{CHLORO},{CHR20_SLICE}]", *TINY,
                            f"output={run}", "trainer.fast_dev_run=true", "data.window_len=256", "data.batch_size=2",
                            "data.max_eval_windows=4", f"data.cache_dir={tmp_path / 'cache'}"])
    summary = run_pretraining(cfg)
    assert summary["global_step"] == 1 and 0.0 < summary["val"]["bpb"] < 4.0
    assert load_extra(run / "model")["fasta"] == [str(CHLORO), str(CHR20_SLICE)]
    assert str(CHR20_SLICE) in (run / "config.yaml").read_text()
    assert "composition entropy" in capsys.readouterr().out
    with pytest.raises(GenossmError, match="nope.fa.gz: FASTA file not found"):
        run_pretraining(compose_pretrain(["~experiment", "data=custom", f"fasta=[{CHLORO},{tmp_path / 'nope.fa.gz'}]",
                                          *TINY, f"output={tmp_path / 'bad'}"]))


@pytest.mark.slow
@pytest.mark.parametrize("stop", [3, 4], ids=["mid-epoch", "epoch-boundary"])
def test_resume_matches_uninterrupted_run(tmp_path, stop):
    """Stopped mid-epoch (epochs are 4 steps) or at an epoch's end (where every periodic last.ckpt of the demo
    lands), then continued in the same run folder: the same weights, validation and epoch counter."""
    common = [*TINY, "trainer.max_time=null", "data.window_len=128", "data.batch_size=2",
              "data.samples_per_epoch=8", "task.max_steps=6", "task.warmup_steps=2",
              "callbacks.last_checkpoint.every_n_train_steps=1", "baselines.enabled=false", "seed=3",
              "trainer.log_every_n_steps=1"]
    full = run_pretraining(compose_pretrain([*common, "trainer.max_steps=6", f"output={tmp_path / 'full'}"]))
    part = run_pretraining(compose_pretrain([*common, f"trainer.max_steps={stop}", f"output={tmp_path / 'split'}"]))
    assert part["global_step"] == stop
    resumed = run_pretraining(compose_pretrain([*common, "trainer.max_steps=6", f"output={tmp_path / 'split'}"]))
    assert resumed["global_step"] == 6
    a, b = from_pretrained(tmp_path / "full" / "model"), from_pretrained(tmp_path / "split" / "model")
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
    assert resumed["val"]["bpb"] == pytest.approx(full["val"]["bpb"], rel=1e-5)
    ckpt = torch.load(tmp_path / "split" / "checkpoints" / "last.ckpt", weights_only=False)
    ckpt_full = torch.load(tmp_path / "full" / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 6
    assert ckpt["epoch"] == ckpt_full["epoch"] == 1  # the epoch counter is not one ahead
    # metrics.csv holds the whole run: the rows before the resumed step kept, those after recomputed
    def train_rows(run):
        rows = list(csv.DictReader(open(tmp_path / run / "logs" / "metrics.csv")))
        return {int(r["step"]): float(r["train/loss"]) for r in rows if r.get("train/loss")}

    full_rows, split_rows = train_rows("full"), train_rows("split")
    assert sorted(split_rows) == sorted(full_rows) == list(range(6))
    assert split_rows == pytest.approx(full_rows, rel=1e-5)


def test_bad_values_fail_before_training(tmp_path):
    with pytest.raises(MissingConfigException, match="tiny"):  # lists the available options
        compose_pretrain(["model=huge"])
    with pytest.raises(GenossmError, match="1,048,576"):
        run_pretraining(compose_pretrain([*TINY, "data.window_len=2000000", f"output={tmp_path / 'a'}"]))
    with pytest.raises(GenossmError, match="longest training interval"):
        run_pretraining(compose_pretrain([*TINY, "data.window_len=70000", f"output={tmp_path / 'b'}"]))
    with pytest.raises(GenossmError, match="not found"):
        run_pretraining(compose_pretrain([*TINY, f"fasta={tmp_path / 'missing.fa'}", f"output={tmp_path / 'c'}"]))
    with pytest.raises(GenossmError, match="unknown model config"):
        run_pretraining(compose_pretrain([*TINY, "+model.d_modle=3", f"output={tmp_path / 'd'}"]))
    assert not (tmp_path / "a" / "checkpoints").exists() and not (tmp_path / "b" / "checkpoints").exists()


def test_tensorboard_logger_message_when_missing(tmp_path):
    pytest.importorskip("lightning")
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        from genossm.tasks.callbacks import tensorboard_logger

        with pytest.raises(GenossmError, match="pip install tensorboard"):
            tensorboard_logger(save_dir=str(tmp_path))
    else:
        pytest.skip("tensorboard is installed; the missing-package message cannot be shown")


def test_cli_cfg_job_and_clean_error(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    job = subprocess.run([sys.executable, "-m", "genossm.cli", "pretrain", "--cfg", "job", "experiment=human_1m"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert job.returncode == 0, job.stderr
    assert "window_len: 1048576" in job.stdout and "gradient_checkpointing: true" in job.stdout
    bad = subprocess.run([sys.executable, "-m", "genossm.cli", "pretrain", f"fasta={tmp_path / 'nope.fa'}",
                          f"output={tmp_path / 'out'}"], capture_output=True, text=True, env=env, cwd=tmp_path,
                         timeout=120)
    assert bad.returncode == 2
    assert "genossm: error:" in bad.stderr and "nope.fa" in bad.stderr and "Traceback" not in bad.stderr


PLUGIN_LAUNCHER = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"


def test_slurm_launcher_writes_valid_submission(tmp_path, monkeypatch):
    """Compose hydra/launcher=slurm (genossm's settings on the submitit plugin's schema), let Hydra instantiate the
    plugin's launcher and launch a job, as ``genossm pretrain -m hydra/launcher=slurm`` does, against a fake
    sbatch that records the script: the plugin's own mapping of the config to submitit's parameters runs, so a
    conf/hydra/launcher/slurm.yaml that stops matching the plugin fails here. Checks the requeue signal,
    resources and the pickled job. Composing prints no Hydra warning (no config shadows the plugin's schema)."""
    import warnings

    submitit = pytest.importorskip("submitit")
    from hydra._internal.callbacks import Callbacks
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.plugins import Plugins
    from hydra.types import HydraContext
    from omegaconf import OmegaConf

    def plugin_launcher(obj) -> bool:  # Hydra's plugin discovery loads the plugin's module under its own import
        return f"{type(obj).__module__}.{type(obj).__qualname__}" == PLUGIN_LAUNCHER

    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "sbatch").write_text(f"#!/bin/sh\ncp \"$1\" {tmp_path}/submitted.sh\necho Submitted batch job 4242\n")
    (fake / "sbatch").chmod(0o755)
    (fake / "srun").write_text("#!/bin/sh\nexit 1\n")  # only looked up, never run
    (fake / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    # the launcher waits for the job's result after submitting it; there is no cluster to run it
    monkeypatch.setattr(submitit.core.core.Job, "results", lambda job: [f"job {job.job_id} submitted"])

    sweep = tmp_path / "sweep"
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a schema-shadowing (or any other) warning fails the test
            cfg = compose(config_name="pretrain", overrides=["hydra/launcher=slurm", "trainer=ddp",
                                                             "hydra.launcher.gpus_per_node=4",
                                                             "hydra.launcher.tasks_per_node=4",
                                                             "hydra.launcher.partition=gpu",
                                                             f"hydra.sweep.dir={sweep}",
                                                             "hydra.job.name=pretrain"],  # as genossm pretrain names it
                          return_hydra_config=True)
        launcher_cfg = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
        assert launcher_cfg["_target_"] == PLUGIN_LAUNCHER and launcher_cfg["max_num_timeout"] > 0
        assert launcher_cfg["account"] is None and launcher_cfg["additional_parameters"] == {}  # the plugin's schema
        context = HydraContext(config_loader=GlobalHydra.instance().config_loader(), callbacks=Callbacks(cfg))
        launcher = Plugins.instance().instantiate_launcher(hydra_context=context, task_function=print, config=cfg)
        assert plugin_launcher(launcher)
        returns = launcher.launch([["experiment=human_chr20_131k"]], initial_job_idx=0)
    with pytest.raises(Exception, match="timeout_min"):  # the schema types the fields
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            compose(config_name="pretrain", overrides=["hydra/launcher=slurm", "hydra.launcher.timeout_min=soon"],
                    return_hydra_config=True)
    assert returns == ["job 4242 submitted"]
    script = (tmp_path / "submitted.sh").read_text()
    for line in ("#SBATCH --signal=USR2@120", "#SBATCH --gpus-per-node=4", "#SBATCH --ntasks-per-node=4",
                 "#SBATCH --partition=gpu", "#SBATCH --time=1440", "#SBATCH --job-name=genossm-pretrain"):
        assert line in script, (line, script)
    assert "submitit.core._submit" in script
    pickled = list((sweep / ".submitit").rglob("*_submitted.pkl"))
    assert [p.name for p in pickled] == ["4242_submitted.pkl"]
    job = submitit.core.utils.DelayedSubmission.load(pickled[0])
    assert plugin_launcher(job.function) and job.args[0] == ["experiment=human_chr20_131k"]
    assert job.function.params["max_num_timeout"] == 20  # submitit requeues on the time limit, up to 20 times


def test_run_folder_keyed_by_slurm_job(monkeypatch):
    from genossm.config import run_id

    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "777")
    assert compose_pretrain([]).output == "outputs/pretrain/slurm-777"
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "12")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert run_id() == "slurm-12_3"
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID")
    monkeypatch.delenv("SLURM_JOB_ID")
    assert run_id() == run_id() and not run_id().startswith("slurm")


def test_ranks_read_different_windows(tmp_path):
    """As under DDP with 2 ranks: the demo data config gives each rank its own training windows."""
    from genossm.config import instantiate

    cfg = compose_pretrain([*TINY, f"data.cache_dir={tmp_path}"])
    dm = instantiate(cfg.data)
    batches = []
    for rank in (0, 1):
        dm._rank = lambda rank=rank: (rank, 2)
        ds = dm.train_dataset()
        assert len(ds) == -(-cfg.data.samples_per_epoch // (cfg.data.batch_size * 2))  # the epoch is split
        batches.append(next(iter(ds)))
    assert not torch.equal(batches[0]["start"], batches[1]["start"])
    assert not torch.equal(batches[0]["tokens"], batches[1]["tokens"])


def test_checkpoint_and_exported_model_record_the_same_training_metadata(tmp_path):
    """evaluate with best.ckpt and with the exported folder: the same training genome and held-out span, so
    the same Markov baseline (fitted on the training span only) and the same scores."""
    run = tmp_path / "run"
    cfg = compose_pretrain(["experiment=demo", *TINY, f"output={run}", "trainer.max_steps=2", "data.batch_size=2",
                            "data.samples_per_epoch=4", "data.window_len=128"])
    run_pretraining(cfg)
    evaluate = load_workflow("evaluate").evaluate
    ckpt, folder = load_extra(run / "checkpoints" / "best.ckpt"), load_extra(run / "model")
    assert ckpt["fasta"] == folder["fasta"] == str(CHLORO) and ckpt["held_out"] == folder["held_out"]
    assert len(folder["held_out"]) == 2  # the demo's validation and test BED spans
    results = []
    for model in (run / "checkpoints" / "best.ckpt", run / "model"):
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            ecfg = compose(config_name="evaluate", overrides=[
                f"pretrained={model}", f"fasta={CHLORO}", f"output={tmp_path / model.name}", "baselines.max_order=2",
                "max_windows=4", "torch_threads=1"])
        results.append(evaluate(ecfg))
    a, b = results
    assert a["baselines"]["fitted_on"] == b["baselines"]["fitted_on"]
    assert "held-out span" in a["baselines"]["fitted_on"]
    held = sum(e - s for _, s, e in folder["held_out"])
    assert a["baselines"]["n_train_bases"] <= 154478 - held
    assert a["model"]["bpb"] == pytest.approx(b["model"]["bpb"], abs=1e-6)
