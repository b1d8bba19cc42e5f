"""Training throughput of the masked-LM task: tokens/s (forward + backward + AdamW step) per model and window.

    python benchmarks/train.py                      # CPU: tiny and small at 1 kb and 8 kb
    python benchmarks/train.py --sizes tiny --windows 1024 --steps 3
On a CUDA machine it also runs the GPU sizes (small and base up to 131 kb, bf16) and reports peak memory.
Tokens are random bases, so only speed is measured; a number per row is the median over --steps timed steps
after one warm-up step.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from genossm.config import model_config
from genossm.tasks.pretrain import MaskedLM


def bench(size: str, window: int, batch: int, steps: int, device: str, bf16: bool) -> dict:
    task = MaskedLM(model_config=model_config(size), max_steps=1000, warmup_steps=1).to(device)
    opt = task.configure_optimizers()["optimizer"]
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 4, (batch, window), generator=gen).to(device)
    data = {"tokens": tokens, "valid": torch.ones_like(tokens, dtype=torch.bool),
            "softmask": torch.zeros_like(tokens, dtype=torch.bool)}
    times = []
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for i in range(steps + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
            loss = task.shared_step(data, "train", i)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        if i:  # the first step warms up (allocations, kernel compilation)
            times.append(time.perf_counter() - t0)
    sec = statistics.median(times)
    row = {"model": size, "params": task.model.num_parameters(), "device": device, "window": window, "batch": batch,
           "s/step": sec, "tokens/s": batch * window / sec}
    if device == "cuda":
        row["peak GiB"] = torch.cuda.max_memory_allocated() / 2**30
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["tiny", "small"])
    ap.add_argument("--windows", nargs="+", type=int, default=[1024, 8192])
    ap.add_argument("--tokens-per-batch", type=int, default=8192, help="batch = max(1, this // window)")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-gpu", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    plan = [(s, w, "cpu", False) for s in args.sizes for w in args.windows]
    if torch.cuda.is_available() and not args.no_gpu:
        plan += [(s, w, "cuda", True) for s in ("small", "base") for w in (1024, 8192, 131072)]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU thread(s)"
          + (f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""))
    header = f"{'model':<6}{'params':>10}{'device':>7}{'window':>9}{'batch':>6}{'s/step':>9}{'tokens/s':>11}{'peak GiB':>10}"
    print(header)
    for size, window, device, bf16 in plan:
        tpb = args.tokens_per_batch if device == "cpu" else max(args.tokens_per_batch, window) * 4
        row = bench(size, window, max(1, tpb // window), args.steps, device, bf16)
        peak = f"{row['peak GiB']:.2f}" if "peak GiB" in row else "-"
        print(f"{row['model']:<6}{row['params']:>10,}{row['device']:>7}{row['window']:>9,}{row['batch']:>6}"
              f"{row['s/step']:>9.2f}{row['tokens/s']:>11,.0f}{peak:>10}", flush=True)


if __name__ == "__main__":
    main()
