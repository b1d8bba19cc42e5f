"""Model throughput and memory: forward pass, training step, chunked million-base inference.

    python benchmarks/model.py                      # CPU plan (small at 1 kb and 131 kb, chunked 1 Mb with tiny)
    python benchmarks/model.py --device cuda        # GPU plan (small at 1 kb, 131 kb, 1 Mb; bf16 training)
    python benchmarks/model.py --quick              # a fast sanity run of the table
    python benchmarks/model.py --cpu [--contention] # CPU side by side: genossm, the baseline commit, HF's Mamba
    PYTHONPATH=path/to/mamba python benchmarks/model.py --device cuda   # with the mamba_ssm peer rows

The "peer" rows (GPU only, when ``mamba_ssm`` with its CUDA extension is importable) are a Caduceus-like
bidirectional LM on ``mamba_ssm``'s own Mamba block (``benchmarks/mamba_peer.py``), timed the same way.

Each case runs in its own process so its peak memory is its own: on CPU the peak resident set size
during the timed call (VmHWM, reset before the call), on GPU ``torch.cuda.max_memory_allocated``.
tokens/s counts input bases (batch 1). Training steps use AdamW on the masked-LM loss over all
positions. On GPU everything runs under bf16 autocast. ``ckpt`` marks per-layer gradient checkpointing.

``--cpu`` prints a different table (``benchmarks/side_by_side.py``): tokens/s of genossm (float32 and, where
the CPU has native bf16, bf16 autocast), of the same code at the baseline commit (float32) and of a
Caduceus-style model from HF ``transformers``' MambaMixer (``benchmarks/hf_peer.py``, float32), each in its
own worker process, round-robin, best of 3 (at 131 kb: 2 for genossm, 1 for the others), at 2 threads then 1
thread; ``--contention`` repeats the rows (but those at 131 kb) at the first thread count beside a process
keeping one core busy and prints the slowdown. The HF peer is left out at 131 kb: its PyTorch fallback scan
materialises two (d_inner, L, state) float32 tensors per layer (8 GiB at 131 kb).

"+run MiB" is the memory the timed call added on top of the loaded model and inputs. The chunked rows
check it against the long-sequence inference's budget: two (strands x L x d_model) float32
activations plus the logits plus one chunk's intermediates, so memory grows with L (the output) and
with chunk_len, but not with the number of chunks.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

CONF = Path(__file__).resolve().parent.parent / "conf" / "model"
MiB = 2**20


def model_fields(config: str, model_dir: str | Path = CONF) -> dict:
    """The fields of ``<model_dir>/<config>.yaml`` as Hydra composes the model group (a model config inherits
    another's fields through its defaults list); ``model_dir`` may be another checkout's ``conf/model``."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(Path(model_dir).resolve()), version_base="1.3"):
        return OmegaConf.to_container(compose(config_name=config), resolve=True)


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
        cfg = model_fields(spec["config"])
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


# ------------------------------------------------------------------------------- side by side (--cpu)
def _build(impl: str, config: str, conf_dir: str):
    import torch

    cfg = model_fields(config, conf_dir)
    torch.manual_seed(0)
    if impl == "hf":
        from hf_peer import HFPeerLM

        return HFPeerLM(rc=cfg.get("rc_equivariant", False), **cfg)
    from genossm.models import BiMambaConfig, BiMambaLM

    return BiMambaLM(BiMambaConfig(**cfg))


def job_model(cache, impl, config, length, mode, bf16=False, conf_dir=str(CONF), warm_len=None):
    """One timed call (a no-grad forward, or a training step) -> {"seconds", "tokens_per_s"}. The first call
    for a (model, length, mode) warms up at ``warm_len`` (default: length)."""
    import torch
    import torch.nn.functional as F

    key = (impl, config)
    if key not in cache:
        model = _build(impl, config, conf_dir)
        cache[key] = (model, torch.optim.AdamW(model.parameters(), lr=1e-4))
    model, opt = cache[key]

    def run(n):
        tokens = torch.randint(0, 4, (1, n), generator=torch.Generator().manual_seed(0))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            if mode == "forward":
                with torch.no_grad():
                    model.eval()(tokens)
                return
            model.train()
            logits = model(tokens)
        F.cross_entropy(logits.float().reshape(-1, 4), tokens.reshape(-1)).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    warm = (impl, config, length, mode, bf16)
    if warm not in cache:
        run(warm_len or length)
        cache[warm] = True
    t0 = time.perf_counter()
    run(length)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "tokens_per_s": length / seconds}


def cpu_rows(quick: bool):
    """(label, config, length, mode, slow) for the side-by-side table."""
    kb = 1024
    if quick:
        return [("tiny inference 256", "tiny", 256, "forward", False),
                ("tiny train step 256", "tiny", 256, "train", False)]
    return [("small inference 1 kb", "small", kb, "forward", False),
            ("small inference 131 kb", "small", 128 * kb, "forward", True),
            ("tiny train step 1 kb", "tiny", kb, "train", False),
            ("small train step 1 kb", "small", kb, "train", False)]


# The HF fallback scan materialises exp(Δ A) and Δ B u for every position: (d_inner, L, state) float32 each
HF_MAX_LENGTH = 16384


def side_by_side(args) -> None:
    import side_by_side as sbs

    print(sbs.set_thread_policy(not args.spin))
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from genossm.models import cpu_bf16_supported

    bf16 = cpu_bf16_supported()
    print(sbs.machine_line(), f"| native bf16: {'yes' if bf16 else 'no'} | torch {torch.__version__}")
    print("tokens/s, batch 1; best of 3 round-robin (131 kb: 2 for genossm, 1 for the baseline; HF left out); "
          "genossm-bf16 = torch.autocast('cpu', torch.bfloat16)")
    peers = {}
    if not args.no_peers and sbs.module_file("transformers"):
        peers["hf"] = True
    elif not args.no_peers:
        print("HF transformers not installed (pip install -e '.[bench]'): no HF column")
    results = {}
    with (sbs.baseline_tree() if not args.no_baseline else contextlib.nullcontext(None)) as base:
        for busy in [False, True] if args.contention else [False]:
            # beside a busy process: the largest thread count (the one that can collapse), no 131 kb rows
            for threads in args.thread_counts[:1] if busy else args.thread_counts:
                workers = {"genossm": sbs.Worker(__file__, threads)}
                if base:
                    workers["baseline"] = sbs.Worker(__file__, threads, root=base)
                if peers:
                    workers["hf"] = sbs.Worker(__file__, threads)
                try:
                    with sbs.busy_core(busy):
                        for label, config, length, mode, slow in cpu_rows(args.quick):
                            if slow and (busy or args.no_long):
                                continue
                            calls, reps = {}, {}
                            conf = {"baseline": str(Path(base or ".") / "conf" / "model")}
                            for name, w in workers.items():
                                if name == "hf" and length > HF_MAX_LENGTH:
                                    continue
                                variants = [(name, False)] + ([(name, True)] if name == "genossm" and bf16 else [])
                                for impl_name, use_bf16 in variants:
                                    col = impl_name + ("-bf16" if use_bf16 else "")
                                    kw = dict(impl="hf" if name == "hf" else "genossm", config=config, length=length,
                                              mode=mode, bf16=use_bf16, conf_dir=conf.get(name, str(CONF)),
                                              warm_len=1024 if slow else None)
                                    calls[col] = (lambda w=w, kw=kw: w.run("model", **kw))
                                    reps[col] = (1 if name != "genossm" else 2) if slow else (args.repeats or 3)
                            results[(busy, threads, label)] = sbs.round_robin(calls, reps)
                            _print_row(sbs, busy, threads, label, results[(busy, threads, label)], length)
                finally:
                    for w in workers.values():
                        w.close()
    _print_tables(sbs, args, results, bf16)


def _print_row(sbs, busy, threads, label, res, length):
    parts = [f"{k} {v['tokens_per_s']:.0f}" if "error" not in v else f"{k} {v['error']}" for k, v in res.items()]
    print(f"  [{'busy' if busy else 'idle'}, {threads} threads] {label}: " + ", ".join(parts) + f"  ({sbs.load_line()})",
          flush=True)


def _print_tables(sbs, args, results, bf16):
    cols = ["genossm"] + (["genossm-bf16"] if bf16 else []) + ["baseline", "hf"]
    for busy in sorted({k[0] for k in results}):
        print()
        print(("beside a busy process (one core at 100 %)" if busy else "idle machine")
              + f", {sbs.load_line()}; baseline = {sbs.BASELINE}")
        headers = ["threads", "row"] + [f"{c} tok/s" for c in cols]
        headers += [f"{c} / baseline" for c in cols[: 1 + bf16]] + [f"{c} / hf" for c in cols[: 1 + bf16]]
        rows = []
        for (b, threads, label), res in results.items():
            if b != busy:
                continue
            row = [threads, label] + [sbs.cell(res.get(c), "tokens_per_s") for c in cols]
            row += [sbs.ratio(res.get(c), res.get("baseline")) for c in cols[: 1 + bf16]]
            row += [sbs.ratio(res.get(c), res.get("hf")) for c in cols[: 1 + bf16]]
            rows.append(row)
        print(sbs.table(headers, rows))
    if args.contention:
        print()
        print("slowdown beside a busy process (seconds busy / seconds idle)")
        headers = ["threads", "row"] + cols
        rows = []
        for (b, threads, label), res in results.items():
            if b:
                idle = results[(False, threads, label)]
                rows.append([threads, label] + [sbs.ratio(idle.get(c), res.get(c)) for c in cols])
        print(sbs.table(headers, rows))


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
    parser.add_argument("--cpu", action="store_true", help="side by side on CPU: genossm, the baseline commit, HF")
    parser.add_argument("--contention", action="store_true", help="--cpu: again beside a busy process")
    parser.add_argument("--thread-counts", type=int, nargs="*", default=[2, 1], help="--cpu: thread counts")
    parser.add_argument("--no-baseline", action="store_true", help="--cpu: without the baseline commit")
    parser.add_argument("--no-peers", action="store_true", help="--cpu: without the HF peer")
    parser.add_argument("--no-long", action="store_true", help="--cpu: without the 131 kb rows")
    parser.add_argument("--spin", action="store_true", help="--cpu: leave OMP_WAIT_POLICY unset (spinning)")
    args = parser.parse_args()
    if args.cpu:
        side_by_side(args)
        return

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
