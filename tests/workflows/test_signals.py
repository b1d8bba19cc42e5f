"""SIGTERM stops a workflow: exit 143 within seconds, nothing new at output=, an earlier output untouched."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from helpers import save_tiny_model

SLICE = "variants_chr20_slice.fa.gz"


@pytest.mark.slow
def test_sigterm_stops_score_variants_and_keeps_the_earlier_output(tmp_path, bundled_data):
    model = save_tiny_model(tmp_path / "model", train_window_len=64)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    earlier = out_dir / "sat.tsv"
    earlier.write_text("an earlier result\n")
    # a saturation run long enough to be caught in the middle (thousands of alleles, one per batch)
    proc = subprocess.Popen(
        [sys.executable, "-m", "genossm.cli", "score-variants", f"pretrained={model}", f"fasta={bundled_data / SLICE}",
         "scan=saturation", "region=20:421801-424800", "window_len=64", "alleles_per_batch=1", "emb_dist=false",
         f"output={earlier}", "progress=false", f"cache_dir={tmp_path / 'cache'}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=dict(os.environ, OMP_NUM_THREADS="1"))
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None and len(list(out_dir.iterdir())) < 2:
        time.sleep(0.2)  # until the run has started writing (a temporary file beside the output)
    assert proc.poll() is None, "the run ended before it could be stopped: " + proc.communicate()[1][-2000:]
    assert len(list(out_dir.iterdir())) >= 2, "the run never started writing"
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert time.monotonic() - started < 30  # seconds, on a busy machine
    assert proc.returncode == 143, err[-2000:]
    assert "stopped by SIGTERM" in err and "Traceback" not in err
    assert earlier.read_text() == "an earlier result\n"
    assert sorted(p.name for p in out_dir.iterdir()) == ["sat.tsv"]
