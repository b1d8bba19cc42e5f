"""Caduceus-PS-131k on CPU: genossm beside the original Caduceus code, and genossm's memory at 131 kb.

    python benchmarks/caduceus.py --original path/to/harness.py     # the side-by-side table
    python benchmarks/caduceus.py                                   # genossm's rows only
    python benchmarks/caduceus.py --quick                           # 1 kb, one repetition

The model is the configuration of ``kuleshov-group/caduceus-ps_seqlen-131k_d_model-256_n_layer-16`` (d_model
256, 16 layers, RCPS, weight-tied BiMamba, 7.7 M parameters) with random weights. With ``--original`` the
weights are those of the original ``CaduceusForMaskedLM`` (saved with ``save_pretrained`` and imported by
genossm), so both columns run one model, and the table first prints how far their A/C/G/T log-probabilities
are apart.

The original code runs as a CPU user has to run it: ``mamba_ssm`` does not build without CUDA, so its
pure-PyTorch reference functions stand in for the CUDA kernels (``selective_scan_ref``, a Python loop over
positions, and ``rms_norm_ref``). ``--original`` names a Python file that provides that environment:
``unpack_sources(upstream_dir, mamba_sdist, workdir)``, ``install_cpu_mamba_ssm(mamba_root)`` and
``import_caduceus(cad_root)``, with ``UPSTREAM_DIR_DEFAULT`` and ``MAMBA_SDIST_DEFAULT`` beside them (the
Caduceus files at a pinned commit and a mamba_ssm sdist), and needs ``transformers`` 4.38 and ``einops``.

Timing: a forward pass of batch 1 (no gradients), tokens/s counts input bases; genossm and the original are
called round-robin, best of 3 (``--repeats``), at each thread count. Memory: genossm's peak resident set size
during one forward pass at 131,072 bases, each mode in its own process (the plain forward, and the long-sequence
inference ``chunk_len=16384`` that scoring uses for long windows).
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from side_by_side import load_line, machine_line, round_robin, set_thread_policy, table  # noqa: E402

HUB_CONFIG = {  # the published config of caduceus-ps_seqlen-131k_d_model-256_n_layer-16
    "model_type": "caduceus", "d_model": 256, "n_layer": 16, "vocab_size": 16, "pad_vocab_size_multiple": 8,
    "rcps": True, "bidirectional": True, "bidirectional_strategy": "add", "bidirectional_weight_tie": True,
    "rms_norm": True, "fused_add_norm": True, "residual_in_fp32": False, "norm_epsilon": 1e-5,
    "complement_map": {str(i): c for i, c in enumerate([0, 1, 2, 3, 4, 5, 6, 10, 9, 8, 7, 11, 12, 13, 14, 15])},
    "ssm_cfg": {"d_state": 16, "d_conv": 4, "expand": 2, "dt_rank": "auto", "dt_min": 0.001, "dt_max": 0.1,
                "dt_init": "random", "dt_scale": 1.0, "dt_init_floor": 1e-4, "conv_bias": True, "bias": False,
                "use_fast_path": True},
}
MiB = 2**20


def genossm_model(folder: Path | None):
    """genossm's model: the original's saved weights when given, else random weights in the same layout."""
    import torch

    from genossm.models import BiMambaLM, from_pretrained
    from genossm.models import caduceus

    if folder is not None:
        return from_pretrained(folder)
    ids = caduceus.token_ids(caduceus.published_vocab(16), caduceus.complement_map(HUB_CONFIG, 16, "config"), "config")
    torch.manual_seed(0)
    return BiMambaLM(caduceus.model_config(HUB_CONFIG, "config", token_ids=ids)).eval()


def original_model(harness: Path, out: Path):
    """The original CaduceusForMaskedLM (random weights, seed 0), saved to ``out`` for genossm to import."""
    import torch

    spec = importlib.util.spec_from_file_location("caduceus_cpu_harness", harness)
    h = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = h
    spec.loader.exec_module(h)
    work = Path(tempfile.mkdtemp(prefix="caduceus-bench-"))
    cad_root, mamba_root = h.unpack_sources(Path(h.UPSTREAM_DIR_DEFAULT), Path(h.MAMBA_SDIST_DEFAULT), work)
    h.install_cpu_mamba_ssm(mamba_root)
    cad = h.import_caduceus(cad_root)
    values = {k: v for k, v in HUB_CONFIG.items() if k != "model_type"}
    values["complement_map"] = {int(k): v for k, v in values["complement_map"].items()}
    torch.manual_seed(0)
    model = cad.CaduceusForMaskedLM(cad.CaduceusConfig(**values)).eval()
    model.save_pretrained(out)
    return model


def timed(fn, tokens) -> dict:
    import torch

    with torch.no_grad():
        start = time.perf_counter()
        fn(tokens)
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "tokens_per_s": tokens.shape[1] / seconds}


def _peak_case(length: int, chunk_len: int | None, queue) -> None:
    import torch

    from genossm.ops.selective_scan import cpu as cpu_kernel  # noqa: F401  (compiled before the measurement)

    torch.set_num_threads(2)
    model = genossm_model(None)
    tokens = torch.randint(0, 4, (1, length))
    with torch.no_grad():
        model(tokens[:, :1024], chunk_len=chunk_len)  # warm up
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM
        base = _rss_mib("VmRSS")
        start = time.perf_counter()
        model(tokens, chunk_len=chunk_len)
        seconds = time.perf_counter() - start
    queue.put({"peak_mib": _rss_mib("VmHWM"), "base_mib": base, "seconds": seconds})


def _rss_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_memory(length: int, chunk_len: int | None) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_peak_case, args=(length, chunk_len, queue))
    proc.start()
    proc.join()
    return queue.get() if not queue.empty() else {"error": f"exit code {proc.exitcode}"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--original", type=Path, help="the file that runs the original Caduceus code on CPU (see above)")
    ap.add_argument("--lengths", default="1024,16384")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--memory-len", type=int, default=131072, help="0: skip the memory rows")
    ap.add_argument("--quick", action="store_true", help="1 kb, one repetition, no memory rows")
    args = ap.parse_args()
    if args.quick:
        args.lengths, args.repeats, args.memory_len = "1024", 1, 0
    print(set_thread_policy())
    import torch
    import torch.nn.functional as F

    print(machine_line() + f", torch {torch.__version__}; {load_line()}")
    original = None
    with tempfile.TemporaryDirectory() as tmp:
        if args.original:
            original = original_model(args.original, Path(tmp) / "ps131k")
        ours = genossm_model(Path(tmp) / "ps131k" if original is not None else None)
        print(f"Caduceus-PS-131k layout: {ours.num_parameters() - 4:,} parameters, scan backend "
              f"{ours.config.scan_backend} (genossm), "
              f"{'the original code with mamba_ssm reference functions' if original is not None else 'no original'}")
        if original is not None:  # one model in both columns: how far apart are they?
            x = torch.randint(0, 4, (1, 1024), generator=torch.Generator().manual_seed(1))
            with torch.no_grad():
                a = F.log_softmax(ours(x).double(), -1)
                b = F.log_softmax(original(input_ids=ours.token_rows[x]).logits[..., [7, 8, 9, 10]].double(), -1)
            print(f"same weights, 1,024 random bases: max |log p genossm - log p original| = "
                  f"{(a - b).abs().max().item():.2e}")
        rows = []
        for threads in [int(t) for t in args.threads.split(",")]:
            torch.set_num_threads(threads)
            for length in [int(n) for n in args.lengths.split(",")]:
                x = torch.randint(0, 4, (1, length), generator=torch.Generator().manual_seed(2))
                calls = {"genossm": lambda: timed(ours, x)}
                if original is not None:
                    ids = ours.token_rows[x]
                    calls["original"] = lambda: timed(lambda t: original(input_ids=t), ids)
                timed(ours, x[:, :256])  # warm up (kernel load, allocator)
                best = round_robin(calls, {name: args.repeats for name in calls})
                g = best["genossm"]["tokens_per_s"]
                o = best["original"]["tokens_per_s"] if "original" in best else None
                rows.append([threads, length, g, o if o is not None else "-",
                             f"{g / o:.0f}x" if o is not None else "-"])
        print()
        print(table(["threads", "bases", "genossm tokens/s", "original tokens/s", "genossm / original"], rows))
    if args.memory_len:
        print()
        mem_rows = []
        for chunk_len in (None, 16384):
            res = peak_memory(args.memory_len, chunk_len)
            mode = "forward" if chunk_len is None else f"chunk_len={chunk_len}"
            if "error" in res:
                mem_rows.append([mode, args.memory_len, res["error"], "-", "-"])
            else:
                mem_rows.append([mode, args.memory_len, res["peak_mib"], res["peak_mib"] - res["base_mib"],
                                 args.memory_len / res["seconds"]])
        print(table(["genossm mode", "bases", "peak RSS MiB", "+run MiB", "tokens/s (2 threads)"], mem_rows))
    print(f"\n{load_line()}")


if __name__ == "__main__":
    main()
