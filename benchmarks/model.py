"""Model throughput and memory: forward pass, training step, chunked million-base inference.

    python benchmarks/model.py                      # CPU plan (small at 1 kb and 131 kb, chunked 1 Mb with tiny)
    python benchmarks/model.py --device cuda        # GPU plan (small at 1 kb, 131 kb, 1 Mb; bf16 training)
    python benchmarks/model.py --quick              # a fast sanity run of the table
    PYTHONPATH=path/to/mamba python benchmarks/model.py --device cuda   # with the mamba_ssm peer rows

The "peer" rows (GPU only, when ``mamba_ssm`` with its CUDA extension is importable) are a Caduceus-like
bidirectional LM on ``mamba_ssm``'s own Mamba block (``benchmarks/mamba_peer.py``), timed the same way.

Each case runs in its own process so its peak memory is its own: on CPU the peak resident set size
during the timed call (VmHWM, reset before the call), on GPU ``torch.cuda.max_memory_allocated``.
tokens/s counts input bases (batch 1). Training steps use AdamW on the masked-LM loss over all
positions. On GPU everything runs under bf16 autocast. ``ckpt`` marks per-layer gradient checkpointing.

"+run MiB" is the memory the timed call added on top of the loaded model and inputs. The chunked rows
check it against the long-sequence inference's budget: two (strands x L x d_model) float32
activations plus the logits plus one chunk's intermediates, so memory grows with L (the output) and
with chunk_len, but not with the number of chunks.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time
from pathlib import Path

CONF = Path(__file__).resolve().parent.parent / "conf" / "model"
MiB = 2**20


def _rss_peak_reset():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM (peak RSS) to the current RSS
    except OSError:
        pass


def _rss_peak_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _case(spec: dict, queue) -> None:
    import torch
    import torch.nn.functional as F
    import yaml

    from genossm.models import BiMambaConfig, BiMambaLM

    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    torch.manual_seed(0)
    if spec["config"] == "peer":
        try:
            from mamba_peer import PeerBiMambaLM

            model = PeerBiMambaLM(gradient_checkpointing=spec.get("ckpt", False)).to(device)
        except ImportError as err:
            queue.put({"error": f"skipped: {err.name or err} not importable"})
            return
    else:
        cfg = yaml.safe_load((CONF / f"{spec['config']}.yaml").read_text())
        cfg["gradient_checkpointing"] = spec.get("ckpt", False)
        model = BiMambaLM(BiMambaConfig(**cfg)).to(device)
    length = spec["length"]
    tokens = torch.randint(0, 4, (1, length), device=device)
    mode = spec["mode"]
    bf16 = device.type == "cuda"  # bf16 autocast on GPU, for inference as for training
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4) if mode == "train" else None

    def run():
        if mode == "forward":
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                model.eval()(tokens)
        elif mode == "chunked":
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                model.eval()(tokens, chunk_len=spec["chunk_len"])
        else:
            model.train()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = model(tokens)
            loss = F.cross_entropy(logits.float().reshape(-1, 4), tokens.reshape(-1))
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(spec["warmup"]):
        run()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / MiB
    else:
        _rss_peak_reset()
        base = _rss_peak_mib()  # right after the reset the peak is the current resident size
    times = []
    for _ in range(spec["repeats"]):
        t0 = time.perf_counter()
        run()
        sync()
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() / MiB if device.type == "cuda" else _rss_peak_mib()
    best = min(times)
    budget = None
    if mode == "chunked":
        strands = 2 if model.config.rc_equivariant else 1
        act = strands * length * model.config.d_model * 4  # one (S, L, D) float32 activation
        # one chunk's intermediates (projections, conv, the chunked scan's buffers): about 24 float32
        # tensors as wide as d_inner, per strand (calibrated on CPU with tiny, 32k context, 8k chunks)
        chunk = 24 * strands * min(spec["chunk_len"], length) * model.config.d_inner * 4
        budget = (2 * act + length * 4 * 4 + chunk) / MiB + 32  # two activations + logits + chunk + slack
    queue.put({"seconds": best, "tokens_per_s": length / best, "peak_mib": peak, "extra_mib": peak - base,
               "budget_mib": budget, "params": model.num_parameters()})


def run_case(spec: dict) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_case, args=(spec, queue))
    proc.start()
    proc.join()
    if not queue.empty():
        return queue.get()
    return {"error": f"exit code {proc.exitcode} (out of memory?)"}


def plan(device: str, quick: bool) -> list[dict]:
    kb, mb = 1024, 1 << 20
    cases = []
    if quick:  # what a shared 2-core CPU finishes in minutes
        for mode in ("forward", "train"):
            cases.append(dict(config="tiny", length=kb, mode=mode))
        cases.append(dict(config="small", length=kb, mode="forward"))
        for length, chunk in ((32 * kb, 8 * kb), (128 * kb, 8 * kb), (128 * kb, 32 * kb)):
            cases.append(dict(config="tiny", length=length, mode="chunked", chunk_len=chunk))
        return cases
    if device == "cpu":
        contexts, train_ckpt = (kb, 128 * kb), {128 * kb}
        chunked_cfg = "tiny"
    else:
        contexts, train_ckpt = (kb, 128 * kb, mb), {mb}
        chunked_cfg = "small"
    for length in contexts:
        cases.append(dict(config="small", length=length, mode="forward"))
        cases.append(dict(config="small", length=length, mode="train", ckpt=length in train_ckpt))
        if device == "cuda" and length >= 128 * kb:
            cases.append(dict(config="small", length=length, mode="train", ckpt=length not in train_ckpt))
    if device == "cuda":  # the peer: mamba_ssm's Mamba block, Caduceus-style (reverse by flipping)
        for length in (128 * kb, mb):
            cases.append(dict(config="peer", length=length, mode="forward"))
            cases.append(dict(config="peer", length=length, mode="train", ckpt=True))
            cases.append(dict(config="peer", length=length, mode="train"))
    for length, chunk in ((mb // 4, 64 * kb), (mb, 64 * kb), (mb, 16 * kb)):
        cases.append(dict(config=chunked_cfg, length=length, mode="chunked", chunk_len=chunk))
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 2)))
    parser.add_argument("--quick", action="store_true", help="tiny model, short contexts")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()

    import torch

    from genossm.ops.selective_scan import resolve_backend

    probe = torch.empty(0, device=args.device)
    print(f"device: {args.device} ({torch.cuda.get_device_name() if args.device == 'cuda' else f'{args.threads} threads'}),"
          f" scan backend: {resolve_backend('auto', probe)}, torch {torch.__version__}")
    header = f"{'config':<7} {'params':>8} {'mode':<14} {'context':>9} {'chunk':>7} {'seconds':>8} {'tokens/s':>10} {'peak MiB':>9} {'+run MiB':>9} {'budget MiB':>10}"
    print(header)
    print("-" * len(header))
    for spec in plan(args.device, args.quick):
        long = spec["length"] > 16384
        spec.update(device=args.device, threads=args.threads,
                    warmup=0 if long and args.device == "cpu" else 1,
                    repeats=args.repeats or (1 if long and args.device == "cpu" else 3))
        r = run_case(spec)
        mode = spec["mode"] + ("+ckpt" if spec.get("ckpt") else "")
        chunk = f"{spec['chunk_len'] // 1024}k" if "chunk_len" in spec else "-"
        ctx = f"{spec['length'] // 1024}k"
        if "error" in r:
            print(f"{spec['config']:<7} {'':>8} {mode:<14} {ctx:>9} {chunk:>7} {r['error']}")
            continue
        budget = f"{r['budget_mib']:.0f}" if r["budget_mib"] else "-"
        ok = "" if r["budget_mib"] is None else ("  within" if r["extra_mib"] <= r["budget_mib"] else "  OVER")
        print(f"{spec['config']:<7} {r['params'] / 1e6:>7.2f}M {mode:<14} {ctx:>9} {chunk:>7} {r['seconds']:>8.2f} "
              f"{r['tokens_per_s']:>10.0f} {r['peak_mib']:>9.0f} {r['extra_mib']:>9.0f} {budget:>10}{ok}", flush=True)


if __name__ == "__main__":
    main()
