"""benchmarks/device_run.sh, the GPU runs' driver, as far as a machine without CUDA can check it: it stops
cleanly before installing anything, and GPU run 2's pretraining holds out the same bases as bundled:human_chr20."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from genossm.config import compose, instantiate
from genossm.data.intervals import make_splits
from genossm.models import load_extra

REPO = Path(__file__).resolve().parents[1]
DRIVER = REPO / "benchmarks" / "device_run.sh"
CHR20 = 63_025_520  # bases of chr20 in GRCh37 (human_chr20_GRCh37.fa.gz)


def drive(plan: str, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(DRIVER), plan], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "OUT": str(out), "PYTHON": sys.executable})


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the driver would run")
@pytest.mark.parametrize("plan", ["run1", "run1-more", "run2"])
def test_without_cuda_the_driver_stops_before_installing(plan, tmp_path):
    done = drive(plan, tmp_path)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "no CUDA device visible" in (tmp_path / "versions.txt").read_text()
    log = (tmp_path / "driver.log").read_text()
    assert log.splitlines()[0].startswith(f"=== plan {plan}, deadline ")
    assert "nothing to measure here, stopping" in log and "install" not in log
    assert sorted(p.name for p in tmp_path.iterdir()) == ["driver.log", "versions.txt"]


def test_an_unknown_plan_is_refused(tmp_path):
    done = drive("run3", tmp_path)
    assert done.returncode == 2 and "unknown plan run3" in done.stdout


def run2_overrides() -> list[str]:
    """The overrides of run 2's ``genossm.cli pretrain`` command, as the driver passes them."""
    text = DRIVER.read_text()
    command = re.search(r"genossm\.cli pretrain (.*?)\"output=", text, re.S).group(1)
    words = shlex.split(command.replace("\\\n", " "))
    return [w for w in words if "=" in w and not w.startswith("fasta=")]


def test_run2_holds_out_the_span_bundled_human_chr20_was_evaluated_on():
    overrides = run2_overrides()
    assert "experiment=human_chr20_131k" in overrides and any(o.startswith("trainer.max_time=") for o in overrides)
    cfg = compose("pretrain", [*overrides, "fasta=chr20.fa.gz", "output=run"])
    spec = instantiate(cfg.data).split_spec  # the data module reads nothing before setup
    chr20 = SimpleNamespace(contig_names=["20"], lengths={"20": CHR20}, all_lengths={"20": CHR20}, fasta="chr20")
    splits = make_splits(chr20, spec)
    held_out = [[c, int(s), int(e)] for split in ("val", "test") for c, s, e in splits[split]]
    assert held_out == load_extra("bundled:human_chr20")["held_out"] == [["20", 59_874_244, CHR20]]
    assert cfg.data.window_len == 131_072 and cfg.model.d_model == 256  # the small model at 131 kb
