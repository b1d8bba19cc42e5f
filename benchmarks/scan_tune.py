"""Sweep the Triton scan's tuning options on a GPU and print which cut of the work is fastest per size.

    python benchmarks/scan_tune.py                       # the four sizes of benchmarks/scan.py, bf16
    python benchmarks/scan_tune.py --sizes 1,512,16,1048576 --repeat 5

For each size and each configuration (tile length, channels per program, warps; the backward's own
channel block and warps) it times the forward, forward+backward and bidirectional forward+backward of
``selective_scan_triton`` (z gate, softplus Δ, D, bf16 inputs) and prints one table per size, fastest
first, with the defaults marked. Results do not depend on the configuration beyond float rounding, which
the sweep checks against the default's output. ``benchmarks/kernel_report.py`` shows the registers each
configuration needs, without a GPU.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from scan import GPU_SIZES, make_inputs, measure, table  # noqa: E402

import genossm.ops.selective_scan.triton as tk  # noqa: E402

# (tile_len, block_d, num_warps, backward_block_d, backward_num_warps); None = the default.
CONFIGS = [
    (None, None, None, None, None),
    (32, 4, 4, 2, 8),
    (32, 4, 4, 2, 4),
    (32, 2, 4, 2, 8),
    (32, 8, 8, 4, 8),
    (16, 4, 4, 4, 8),
    (16, 4, 4, 2, 4),
    (16, 8, 4, 4, 8),
    (64, 2, 4, 2, 8),
    (64, 4, 8, 2, 8),
]
NAMES = ("tile_len", "block_d", "num_warps", "backward_block_d", "backward_num_warps")


def describe(cfg):
    if all(v is None for v in cfg):
        return "default"
    return " ".join(f"{n}={v}" for n, v in zip(NAMES, cfg) if v is not None)


def time_config(x, tuning, repeat):
    args = (x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], True)

    def fwd():
        with torch.no_grad():
            return tk.selective_scan_triton(*args, **tuning)

    grad = torch.randn_like(x["u"])

    def fwd_bwd():
        tk.selective_scan_triton(*args, **tuning).backward(grad)
        for t in x.values():
            t.grad = None

    def bidir():
        out_f, out_r = tk.selective_scan_bidirectional_triton(*args, **tuning)
        torch.autograd.backward([out_f, out_r], [grad, grad])
        for t in x.values():
            t.grad = None

    out = fwd()
    t_f, _ = measure(fwd, "cuda", repeat)
    t_fb, peak = measure(fwd_bwd, "cuda", repeat)
    t_bi, _ = measure(bidir, "cuda", repeat)
    return out, t_f, t_fb, t_bi, peak


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", nargs="*", help="b,d,n,L (default: the four sizes of benchmarks/scan.py)")
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("scan_tune.py times GPU kernels: no CUDA device here (benchmarks/kernel_report.py needs none)")
    sizes = [tuple(int(v) for v in s.split(",")) for s in a.sizes] if a.sizes else GPU_SIZES
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, bf16, z gate, softplus Δ, D")
    for size in sizes:
        x = make_inputs(*size, torch.bfloat16, "cuda")
        rows, reference = [], None
        for cfg in CONFIGS:
            tuning = {n: v for n, v in zip(NAMES, cfg) if v is not None}
            try:
                out, t_f, t_fb, t_bi, peak = time_config(x, tuning, a.repeat)
            except torch.OutOfMemoryError:
                rows.append([describe(cfg), "-", "-", "-", "-", "out of memory"])
                continue
            finally:
                gc.collect()
                torch.cuda.empty_cache()
            if reference is None:
                reference, err = out.float(), 0.0
            else:
                err = (out.float() - reference).abs().max().item() / max(1.0, reference.abs().max().item())
            rows.append([describe(cfg), round(t_f * 1e3, 2), round(t_fb * 1e3, 2), round(t_bi * 1e3, 2),
                         f"{peak / 2**30:.2f} GiB", f"{err:.1e}"])
        rows.sort(key=lambda r: (r[2] == "-", r[2] if r[2] != "-" else 0))
        print(f"\nsize (batch, dim, state, length) = {size}, fastest forward+backward first")
        print(table(["configuration", "fwd ms", "fwd+bwd ms", "bidir f+b ms", "f+b peak", "rel. diff"], rows))
        del x
        gc.collect()
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
