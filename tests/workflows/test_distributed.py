"""DDP for real: ``genossm pretrain trainer=ddp`` on 2 CPU processes (gloo), through the command line, as a
user runs it; FSDP, which PyTorch cannot run on CPU, stops with a clear message."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from genossm.errors import GenossmError
from genossm.models import from_pretrained
from genossm.config import instantiate
from genossm.cli import load_workflow

from helpers import compose_pretrain, save_tiny_model

run_pretraining = load_workflow("pretrain").train

HERE = Path(__file__).resolve().parent
STEPS, BATCH, PER_EPOCH = 4, 2, 8  # 2 batches per rank and epoch: the run crosses an epoch
DDP_CPU = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true"]
SMALL = [
    "model.d_model=16", "model.n_layers=1", "model.gradient_checkpointing=false", f"trainer.max_steps={STEPS}",
    "trainer.max_time=null", "trainer.enable_progress_bar=false", f"data.batch_size={BATCH}", "data.window_len=128",
    f"data.samples_per_epoch={PER_EPOCH}", "data.max_eval_windows=6", "baselines.max_order=3", "torch_threads=1",
]


@pytest.mark.slow
def test_ddp_on_two_cpu_processes(tmp_path):
    outputs, probe = tmp_path / "outputs" / "pretrain", tmp_path / "probe"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    env.pop("GENOSSM_RUN_ID", None)
    # the default output= (outputs/pretrain/<date_time>): rank 1, started seconds later, must find the same folder
    args = [*DDP_CPU, *SMALL, f"data.cache_dir={tmp_path / 'cache'}",
            "+callbacks.probe._target_=ddp_probe.RankProbe", f"+callbacks.probe.folder={probe}",
            f"+callbacks.probe.watch={outputs}"]
    done = subprocess.run([sys.executable, "-m", "genossm.cli", "pretrain", *args], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    (run,) = outputs.iterdir()
    ranks = [json.loads((probe / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["rank"] for r in ranks] == [0, 1]
    for record in ranks:
        assert all(w.startswith(run.name + "/") for w in record["writes"]), record["writes"]
        record["writes"] = [w.split("/", 1)[1] for w in record["writes"]]

    # both ranks trained every step, each on its own windows: exactly the data module's batches for its rank
    cfg = OmegaConf.load(run / "config.yaml")
    dm = instantiate(cfg.data)
    for rank, record in enumerate(ranks):
        assert len(record["windows"]) == STEPS
        dm._rank = lambda rank=rank: (rank, 2)
        ds = dm.train_dataset()
        assert len(ds) == PER_EPOCH // (BATCH * 2)
        for seen in record["windows"]:
            want = ds.batch(seen["epoch"], seen["index"])
            assert seen["contig"] == want["contig"] and seen["start"] == want["start"].tolist(), (rank, seen)
    starts = [{(c, s) for w in r["windows"] for c, s in zip(w["contig"], w["start"])} for r in ranks]
    assert len(starts[0]) == len(starts[1]) == STEPS * BATCH and not starts[0] & starts[1]
    assert {w["epoch"] for w in ranks[0]["windows"]} == {0, 1}

    # validation metrics are synced: both ranks saw the same values, and the summary reports them
    assert ranks[0]["val_bpb"] and ranks[0]["val_bpb"] == ranks[1]["val_bpb"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["global_step"] == STEPS
    assert summary["val"]["bpb"] == pytest.approx(ranks[0]["val_bpb"][-1])

    # exactly one process wrote the run's outputs; the other only its own Hydra log
    for name in ("config.yaml", "checkpoints/last.ckpt", "model/model.safetensors", "model/config.json",
                 "training_curves.png", "summary.json", "logs/metrics.csv"):
        assert name in ranks[0]["writes"], (name, ranks[0]["writes"])
    assert set(ranks[1]["writes"]) <= {"train_ddp_process_1.log"}, ranks[1]["writes"]
    assert (run / "train_ddp_process_1.log").exists()  # rank 1 did run the workflow, in the same run folder
    # the end-of-run report (with the baselines, computed once) is printed once
    out = done.stdout
    assert out.count("composition entropy (order 0)") == 1 and out.count("model:       ") == 1
    assert "per rank (2 ranks)" in out
    assert from_pretrained(run / "model").config.d_model == 16


def test_fsdp_and_gpu_trainers_on_cpu_fail_clearly(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: these configs are valid here")
    with pytest.raises(GenossmError, match="trainer=fsdp needs GPUs.*trainer=ddp trainer.accelerator=cpu"):
        run_pretraining(compose_pretrain(["trainer=fsdp", "trainer.accelerator=cpu", *SMALL, f"output={tmp_path / 'a'}"]))
    with pytest.raises(GenossmError, match="no GPU is visible"):
        run_pretraining(compose_pretrain(["trainer=ddp", *SMALL, f"output={tmp_path / 'b'}"]))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_fsdp_export_rebuilds_the_model_from_the_gathered_state_dict():
    """Under FSDP the end-of-run export gathers the full state dict (keys of the LightningModule) and rank 0
    rebuilds the model from it (the strategy is a stand-in: FSDP itself needs GPUs)."""
    from types import SimpleNamespace

    from genossm.tasks.pretrain import MaskedLM, _full_model

    config = {"d_model": 16, "n_layers": 1, "rc_equivariant": False}
    module = MaskedLM(model_config=config)

    class FakeFSDPStrategy:
        def lightning_module_state_dict(self):
            return module.state_dict()

    model = _full_model(SimpleNamespace(strategy=FakeFSDPStrategy(), is_global_zero=True), module, config)
    assert model is not module.model
    mine, theirs = module.model.state_dict(), model.state_dict()
    assert mine.keys() == theirs.keys()
    for name in mine:
        assert torch.equal(mine[name], theirs[name]), name
    assert _full_model(SimpleNamespace(strategy=FakeFSDPStrategy(), is_global_zero=False), module, config) is None
    assert _full_model(SimpleNamespace(strategy=object(), is_global_zero=True), module, config) is module.model


@pytest.mark.slow
def test_score_variants_on_two_cpu_processes_matches_one(tmp_path, bundled_data):
    """``genossm score-variants trainer=ddp`` on 2 CPU ranks (gloo), through the installed command: Lightning
    re-runs the workflow script for rank 1, the ranks score alternate batches, and rank 0 merges them into
    exactly the bytes one process writes."""
    import shutil

    pretrained = save_tiny_model(tmp_path / "model", rc_equivariant=False)
    script = Path(sys.executable).with_name("genossm")
    command = [str(script)] if script.exists() else [shutil.which("genossm") or "genossm"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = ["score-variants", f"pretrained={pretrained}", f"fasta={bundled_data / 'variants_chr20_slice.fa.gz'}",
              f"variants={bundled_data / 'variants_chr20_indels_1000g.vcf.gz'}", "window_len=40", "indel_flank=1",
              "alleles_per_batch=16", "progress=false", f"cache_dir={tmp_path / 'cache'}"]
    outputs = {}
    for name, extra in (("one", []), ("two", DDP_CPU)):
        folder = tmp_path / name
        folder.mkdir()
        done = subprocess.run([*command, *common, f"output={folder / 'scored.vcf.gz'}", *extra], capture_output=True,
                              text=True, env=env, cwd=folder, timeout=300)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
        outputs[name] = {p.name: p.read_bytes() for p in sorted(folder.iterdir())}
    assert sorted(outputs["two"]) == ["scored.tsv", "scored.vcf.gz", "scored.vcf.gz.tbi"]
    assert outputs["two"] == outputs["one"]
    import pandas as pd

    table = pd.read_csv(tmp_path / "two" / "scored.tsv", sep="\t")
    assert len(table) == 194 and table["llr"].notna().all()
