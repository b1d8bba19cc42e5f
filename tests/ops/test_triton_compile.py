"""The Triton kernels compile for real GPUs (H100 = sm_90, A100 = sm_80) without registers spilling.

The CPU interpreter that runs the kernels in the other tests accepts code the GPU compiler refuses (a
plain Python float read as a global, for one), and it says nothing about registers. This test compiles
every kernel launch of the forward and backward, in every scan direction, with Triton's own compiler and
ptxas, as ``benchmarks/kernel_report.py`` does; no GPU is needed. It runs in a subprocess because the
test session has TRITON_INTERPRET set.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPORT = Path(__file__).resolve().parents[2] / "benchmarks" / "kernel_report.py"
KINDS = {"forward", "reverse", "bidirectional", "carried state"}
# Bytes of stack per thread a kernel may use. Triton 3.9 spills at most 16 bytes (the bidirectional
# backward at 255 registers); much more means a change blew up the register budget.
MAX_STACK = 64


def compile_report(*args):
    triton = pytest.importorskip("triton")
    tools = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    if not (tools / "cuobjdump").exists():
        pytest.skip("this Triton build ships no NVIDIA tools")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run(
        [sys.executable, str(REPORT), "--json", *args], capture_output=True, text=True, env=env, timeout=600
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [
        ("--arch", "90", "--dtype", "bfloat16", "--shape", "1", "2048", "16", str(2**20)),
        ("--arch", "80", "--dtype", "float32", "--shape", "8", "768", "16", str(2**14)),
    ],
    ids=["sm90-bf16-1M", "sm80-fp32-16k"],
)
def test_every_kernel_compiles_without_spilling(args):
    rows = compile_report(*args)
    launched = {(r["kernel"], r["launched_by"]) for r in rows}
    for kind in ("forward", "reverse"):
        for kernel in ("chunk_local", "forward", "backward"):
            assert (kernel, kind) in launched, (kernel, kind)
    assert {kind for _, kind in launched} == KINDS
    assert {("chunk_local", "bidirectional"), ("forward", "bidirectional"), ("backward", "bidirectional")} <= launched
    # the inference forward (nothing saved) and the training forward are separate compilations
    forward_flags = {r["flags"] for r in rows if r["kernel"] == "forward"}
    assert any("SAVE" in f for f in forward_flags) and any("SAVE" not in f for f in forward_flags)
    for r in rows:
        assert 0 < r["regs"] <= 255 and r["blocks_per_sm"] >= 1, r
        assert r["stack"] <= MAX_STACK, f"{r['kernel']} ({r['launched_by']}, {r['flags']}) spills {r['stack']} B/thread"
