"""Compile the Triton selective-scan kernels for a GPU architecture without a GPU, and report their resources.

Every kernel launch the real forward and backward make (one direction, ``reverse``, bidirectional) is
compiled exactly as Triton would compile it at launch time (same constexprs, same integer and pointer
specialisation), for the target architecture (default sm_90, the H100), with the ``ptxas`` shipped with
Triton. The table shows registers per thread, spilled bytes, shared memory and the occupancy those imply.
It catches what the CPU interpreter cannot: code that does not compile for the GPU, register spills and
occupancy cliffs. No kernel is run and no CUDA device or driver is needed.

    python benchmarks/kernel_report.py                      # (1, 2048, 16, 2^20) bf16, sm_90
    python benchmarks/kernel_report.py --shape 8 768 16 16384 --arch 80 --tile-len 64 --block-d 2 \
        --backward-block-d 1 --backward-num-warps 4

Note: registers depend on the Triton version; the numbers printed come from the installed one.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass

if os.environ.get("TRITON_INTERPRET") == "1":
    sys.exit("kernel_report compiles real kernels: unset TRITON_INTERPRET first")

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.runtime import driver as _driver  # noqa: E402

import genossm.ops.selective_scan.triton as tk  # noqa: E402

TUNING = ("tile_len", "tiles_per_chunk", "block_d", "num_warps", "backward_block_d", "backward_num_warps")
KERNELS = ("_chunk_local_kernel", "_combine_chunks_kernel", "_forward_kernel", "_backward_kernel")
REGS_PER_SM = 65536
MAX_THREADS_PER_SM = 2048


class _TargetOnlyDriver:
    """The part of a Triton driver that compilation asks for: the target, a device and a stream id."""

    def __init__(self, arch: int):
        self.target = GPUTarget("cuda", arch, 32)

    def get_current_target(self):
        return self.target

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def is_active(self):
        return True


@dataclass
class Compiled:
    kernel: str
    launched_by: str  # the scan that launched it: forward, reverse, bidirectional or carried state
    flags: str  # the constexpr flags that are on
    block_d: int | None  # None for the combine kernel (its block is over channels × states)
    num_warps: int
    regs: int
    stack: int  # bytes per thread; non-zero means spilled registers
    shared: int

    @property
    def blocks_per_sm(self) -> int:
        threads = 32 * self.num_warps
        by_regs = REGS_PER_SM // max(1, self.regs * threads)
        return max(0, min(by_regs, MAX_THREADS_PER_SM // threads, 32))


class _Recorder:
    """Stands in for a kernel: ``kernel[grid](*args, **kwargs)`` compiles instead of launching.

    Integer arguments are replaced by the values of the full-size problem for the current phase
    (``state["ints"]``), so the kernel is specialised exactly as at the real launch even though the
    buffers passed are small."""

    def __init__(self, name, fn, sink, state):
        self.name, self.fn, self.sink, self.state = name, fn, sink, state

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            ints = self.state["ints"]
            args = [ints.get(n, a) if isinstance(a, int) else a for n, a in zip(self.fn.arg_names, args)]
            flags = ",".join(k for k, v in kwargs.items() if isinstance(v, bool) and v and k.isupper())
            key = (self.name, flags, kwargs.get("num_warps", 4), kwargs.get("BLOCK_D"))
            if key not in self.sink:
                self.sink[key] = (self.state["label"], self.fn.warmup(*args, grid=grid, **kwargs))
        return launch


def _resources(compiled) -> tuple[int, int, int]:
    """(registers per thread, stack-frame bytes per thread, shared bytes) of a compiled kernel, read from
    its cubin with the ``cuobjdump`` shipped with Triton. Registers that do not fit are spilled to the
    stack frame, so a non-zero stack means spills."""
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.cubin")
        with open(path, "wb") as f:
            f.write(compiled.asm["cubin"])
        text = subprocess.run([tool, "--dump-resource-usage", path], capture_output=True, text=True, check=True).stdout

    def field(name):
        m = re.search(rf"\b{name}:(\d+)", text)
        if m is None:
            raise RuntimeError(f"cuobjdump printed no {name} field:\n{text}")
        return int(m.group(1))

    return field("REG"), field("STACK"), field("SHARED")


def compile_all(shape, dtype, arch=90, z=True, softplus=True, **tuning):
    """Compile every kernel the forward and backward launch, for one-direction, reverse, bidirectional
    and carried-state scans, with and without gradients, at ``shape`` = (batch, dim, state, length).
    ``tuning`` as for ``selective_scan_triton``. Returns a list of ``Compiled``."""
    batch, dim, state, length = shape
    cfg = tk._Config(batch, dim, 1, state, length, **tuning)

    def full_ints(c):
        return dict(D=dim, L=length, G=1, N=state, n_tiles=c.n_tiles, n_chunks=c.n_chunks, K=c.K)

    fwd_ints, bwd_ints = full_ints(cfg), full_ints(cfg.for_backward())
    # The buffers are never read, so they are allocated at a small size (same dtypes, same alignment);
    # the full-size integers are put back at each launch. dim stays ≥ 64 so that the combine kernel's
    # block size (min(1024, dim × state)) matches the full problem.
    small_dim = min(dim, max(64, triton.cdiv(1024, state)))
    small_len = 4 * cfg.BT
    sink: dict = {}
    state_ = {"label": "?", "ints": fwd_ints}
    saved = {name: getattr(tk, name) for name in KERNELS}
    run_backward = tk._run_backward

    def backward_phase(*a, **k):
        state_["ints"] = bwd_ints
        try:
            return run_backward(*a, **k)
        finally:
            state_["ints"] = fwd_ints

    _driver.set_active(_TargetOnlyDriver(arch))
    try:
        for name in KERNELS:
            setattr(tk, name, _Recorder(name, saved[name], sink, state_))
        tk._run_backward = backward_phase

        def leaf(*size, dt=dtype):
            return torch.zeros(*size, dtype=dt, requires_grad=True)

        args = dict(
            u=leaf(1, small_dim, small_len),
            delta=leaf(1, small_dim, small_len),
            A=leaf(small_dim, state, dt=torch.float32),
            B=leaf(1, 1, state, small_len),
            C=leaf(1, 1, state, small_len),
            D=leaf(small_dim, dt=torch.float32),
            z=leaf(1, small_dim, small_len) if z else None,
            delta_bias=leaf(small_dim, dt=torch.float32),
            delta_softplus=softplus,
        )
        opts = {**tuning, "tile_len": cfg.BT, "block_d": cfg.BLOCK_D}
        init = leaf(1, small_dim, state, dt=torch.float32)
        runs = (
            ("forward", lambda: tk.selective_scan_triton(**args, **opts)),
            ("reverse", lambda: tk.selective_scan_triton(**args, reverse=True, **opts)),
            ("bidirectional", lambda: sum(tk.selective_scan_bidirectional_triton(**args, **opts))),
            ("carried state", lambda: sum(
                x.sum() for x in tk.selective_scan_triton(**args, initial_state=init, return_last_state=True, **opts)
            )),
        )
        for label, run in runs:
            state_["label"] = label
            with torch.no_grad():  # inference: nothing saved for a backward
                run()
            run().float().sum().backward()
    finally:
        for name, fn in saved.items():
            setattr(tk, name, fn)
        tk._run_backward = run_backward
        _driver.set_active(None)
    rows = []
    for (name, flags, warps, block_d), (label, compiled) in sink.items():
        regs, stack, shared = _resources(compiled)
        rows.append(Compiled(name.strip("_").replace("_kernel", ""), label, flags, block_d, warps, regs, stack, shared))
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shape", type=int, nargs=4, default=[1, 2048, 16, 2**20], metavar=("BATCH", "DIM", "STATE", "LEN"))
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--arch", type=int, default=90, help="compute capability × 10 (90 = H100, 80 = A100)")
    for name in TUNING:
        p.add_argument("--" + name.replace("_", "-"), type=int, default=None)
    p.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    a = p.parse_args(argv)
    tuning = {k: getattr(a, k) for k in TUNING if getattr(a, k) is not None}
    rows = compile_all(tuple(a.shape), getattr(torch, a.dtype), a.arch, **tuning)
    if a.json:
        print(json.dumps([{**asdict(r), "blocks_per_sm": r.blocks_per_sm} for r in rows]))
        return rows
    cfg = tk._Config(a.shape[0], a.shape[1], 1, a.shape[2], a.shape[3], **tuning)
    print(
        f"sm_{a.arch}, triton {triton.__version__}, shape (batch, dim, state, length) = {tuple(a.shape)} {a.dtype}; "
        f"tile {cfg.BT}, {cfg.K} tiles/chunk, {cfg.n_chunks} chunks, grid {cfg.grid(a.shape[0])}"
    )
    head = (f"| {'kernel':<14} | {'scan':<13} | {'flags on':<52} | block_d | warps | regs | stack B | smem B "
            f"| blocks/SM |")
    print(head)
    print("|" + "|".join("-" * len(c) for c in head.split("|")[1:-1]) + "|")
    for r in rows:
        print(
            f"| {r.kernel:<14} | {r.launched_by:<13} | {r.flags[:52]:<52} | {r.block_d or '':>7} | {r.num_warps:>5} "
            f"| {r.regs:>4} | {r.stack:>7} | {r.shared:>6} | {r.blocks_per_sm:>9} |"
        )
    return rows


if __name__ == "__main__":
    main()
