"""Selective-scan benchmark: prints aligned plain-text tables.

    python benchmarks/scan.py --cpu          # chunked vs a per-position loop vs the reference, chunked on
                                             # init-like vs large decays, and a training run at L = 2^20
    python benchmarks/scan.py                # on a CUDA machine: triton, chunked and mamba_ssm side by side
    python benchmarks/scan.py --cpu --mamba-src mamba_ssm-2.3.2.post1.tar.gz [--contention] [--no-details]

CPU side by side (first table of ``--cpu``; ``benchmarks/side_by_side.py``): forward and forward+backward
seconds at (1, 256, 16, 2^14) and (1, 512, 16, 2^16), 2 threads and 1 thread, of genossm's default CPU
backend (the fused C kernel, ``cpu``), of its chunked backend, of the chunked backend at the baseline commit
and of ``mamba_ssm``'s ``selective_scan_ref`` (its forward; its autograd backward only up to L = 2^13),
loaded as that single function from a ``mamba_ssm`` sdist (``pip download mamba-ssm --no-deps --no-binary
:all:``, with MAMBA_SKIP_CUDA_BUILD=TRUE) or installed package, without its CUDA extension. Each in its
own worker process, round-robin, best of 3 (``mamba_ssm``'s reference once: minutes per call).
``--contention`` repeats them beside a busy process (without the reference).

CPU mode, at (batch, dim, state, length) = (1, 256, 16, 2^14) float32 with a z gate, softplus Δ and D:
forward and forward+backward time of the chunked backend, of a tidy per-position loop (one exp, one
multiply-add and one reduction per position, vectorised over batch, channels and state; gradients by
autograd) and of ``selective_scan_ref``, with ratios. Then the chunked backend on init-like Δ against large
decays (every 10th channel, then every channel, decaying past e^-120 within 64 positions). Then a subprocess trains a one-layer toy model
(dim 64, state 16) at L = 2^20 with the chunked scan and reports its peak RSS beside the memory a loop
that keeps exp(Δ·A) for every position would need (computed, not attempted).

GPU mode (default when CUDA is present), bf16 inputs, z gate, softplus Δ, at (1, 2048, 16, 2^20),
(1, 512, 16, 2^20), (2, 1536, 16, 2^17), (8, 768, 16, 2^14): forward and forward+backward time and peak
memory of each backend, the bidirectional entry point against one direction, and each time divided by the
memory-bandwidth floor (bytes that must be read and written ÷ device copy bandwidth measured in the same run).
"""

from __future__ import annotations

import argparse
import ast
import gc
import json
import os
import resource
import subprocess
import sys
import tarfile
import time
from pathlib import Path

if "--spin" not in sys.argv:  # OpenMP threads that sleep when they wait: set before torch is imported
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("KMP_BLOCKTIME", "0")

import torch
import torch.nn.functional as F

GPU_SIZES = [(1, 2048, 16, 2**20), (1, 512, 16, 2**20), (2, 1536, 16, 2**17), (8, 768, 16, 2**14)]
CPU_SIZE = (1, 256, 16, 2**14)
TRAIN_DIM, TRAIN_STATE, TRAIN_LEN = 64, 16, 2**20


# ----------------------------------------------------------------------------------------------- arithmetic
def floor_bytes(batch, dim, state, length, itemsize, groups=1, backward=False):
    """Bytes a scan must at least read and write (inputs u, Δ, z, B, C; output; with z gate and D).

    Forward: read u, Δ, z (batch·dim·length each) and B, C (batch·groups·state·length each), write out.
    Forward+backward adds: read u, Δ, z, the output gradient and B, C again; write the gradients of u, Δ, z,
    B and C. Parameters (A, D, delta_bias) are negligible and left out.
    """
    per_channel = batch * dim * length * itemsize
    per_group = batch * groups * state * length * itemsize
    fwd = 4 * per_channel + 2 * per_group
    if not backward:
        return fwd
    return fwd + 7 * per_channel + 4 * per_group


def loop_activation_bytes(batch, dim, state, length, itemsize=4, tensors_per_position=3):
    """Memory held for the backward by a per-position loop under autograd.

    Each step keeps at least exp(Δ_t·A), the previous state and the new state (for the C·h reduction), each
    (batch, dim, state): ``tensors_per_position`` such tensors per position.
    """
    return tensors_per_position * batch * dim * state * length * itemsize


def fmt_bytes(n):
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024


def table(headers, rows):
    """Plain-text table, columns aligned (text left, numbers right)."""
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]

    def line(vals, raw):
        out = []
        for i, v in enumerate(vals):
            numeric = raw is not None and isinstance(raw[i], (int, float))
            out.append(v.rjust(widths[i]) if numeric else v.ljust(widths[i]))
        return "  ".join(out).rstrip()

    lines = [line(headers, None), "  ".join("-" * w for w in widths)]
    lines += [line(c, r) for c, r in zip(cells, rows)]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ inputs
def make_inputs(batch, dim, state, length, dtype, device, seed=0, requires_grad=True):
    gen = torch.Generator(device="cpu").manual_seed(seed)

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen) * scale).to(device=device, dtype=dtype)

    u = rnd(batch, dim, length)
    delta = rnd(batch, dim, length, scale=0.5)
    z = rnd(batch, dim, length)
    B = rnd(batch, state, length)
    C = rnd(batch, state, length)
    A = (-torch.arange(1, state + 1, dtype=torch.float32)).repeat(dim, 1).to(device)  # S4D-real init
    D = torch.ones(dim, device=device)
    delta_bias = torch.full((dim,), -3.0, device=device)  # softplus(-3 ± 0.5) ≈ 0.03..0.08, as at init
    tensors = dict(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias)
    if requires_grad:
        for t in tensors.values():
            t.requires_grad_(True)
    return tensors


def loop_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, *, reverse=False):
    """Tidy per-position loop: one exp, one multiply-add and one reduction per position.

    Vectorised over batch, channels and state; the per-position slices come from ``unbind`` so that autograd
    stacks their gradients once instead of writing a full-length gradient per position.
    """
    uf = u.float()
    dt = delta.float() if delta_bias is None else delta.float() + delta_bias.float()[None, :, None]
    if delta_softplus:
        dt = F.softplus(dt)
    Af = A.float()
    h = uf.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    steps = list(zip(*(t.movedim(-1, 0).unbind(0) for t in (dt, dt * uf, B.float(), C.float()))))
    ys = []
    for dt_t, du_t, B_t, C_t in reversed(steps) if reverse else steps:
        h = torch.exp(dt_t[..., None] * Af) * h + B_t[:, None, :] * du_t[..., None]
        ys.append((h * C_t[:, None, :]).sum(-1))
    y = torch.stack(ys[::-1] if reverse else ys, -1)
    if D is not None:
        y = y + D.float()[None, :, None] * uf
    if z is not None:
        y = y * F.silu(z.float())
    return y.to(u.dtype)


# A trained model's Δ grows: decays of e^-120 and beyond inside 64 positions become common. These inputs
# exercise them beside the init-like ones (softplus(-3 ± 0.5) ≈ 0.05 per position, |A| ≤ 16).
DECAY_KINDS = (
    ("init-like: Δ ≈ 0.05", None, 0.0),
    ("every 10th channel Δ ≈ 1.3", 10, 1.0),
    ("every channel Δ ≈ 50", 1, 50.0),
)


def decay_inputs(batch, dim, state, length, hot_every=None, hot_bias=0.0, seed=0):
    """``make_inputs`` (float32, CPU) with delta_bias raised to ``hot_bias`` on every ``hot_every``-th channel."""
    x = make_inputs(batch, dim, state, length, torch.float32, "cpu", seed=seed)
    if hot_every:
        with torch.no_grad():
            x["delta_bias"][::hot_every] = hot_bias
    return x


def hot_pair_fraction(x, block_len=64, span=120.0):
    """Share of (batch, block, channel) triples whose decay Σ Δ·max|A| over a block of ``block_len`` positions
    exceeds ``span`` (e^-120): the pairs that earlier versions of the chunked scan stepped position by position."""
    dt = F.softplus(x["delta"].detach().float() + x["delta_bias"].detach().float()[None, :, None])
    length = dt.shape[-1]
    pad = -length % block_len
    sums = F.pad(dt, (0, pad)).unflatten(-1, (-1, block_len)).sum(-1)  # (batch, dim, n_blocks)
    decay = sums * x["A"].detach().abs().amax(-1)[None, :, None]
    return (decay > span).float().mean().item()


# ------------------------------------------------------------------------------------------------ timing
def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def measure(fn, device, repeat):
    """Mean seconds of ``fn()`` after one warm-up call, and the peak memory it added (CUDA only, else None)."""
    fn()
    _sync(device)
    is_cuda = torch.device(device).type == "cuda"
    if is_cuda:
        gc.collect()
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    _sync(device)
    seconds = (time.perf_counter() - start) / repeat
    peak = torch.cuda.max_memory_allocated() - base if is_cuda else None
    return seconds, peak


def copy_bandwidth(device, nbytes=2**30, repeat=5):
    """Device copy bandwidth in bytes/s: bytes read plus bytes written by ``dst.copy_(src)``."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    seconds, _ = measure(lambda: dst.copy_(src), device, repeat)
    del src, dst
    return 2 * nbytes / seconds


def scan_callables(name, x, bidirectional=False):
    """(forward without autograd, forward+backward) closures for one backend on ``x`` (z gate, softplus Δ, D)."""
    args = (x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], True)
    if name == "mamba_ssm":
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from mamba_peer import import_mamba_ssm  # without mamba_ssm's __init__ (it needs transformers)

        selective_scan_fn = import_mamba_ssm()

        def one():
            return (selective_scan_fn(*args),)
    elif name == "loop":
        def one():
            return (loop_scan(*args),)
    else:
        from genossm.ops.selective_scan import selective_scan, selective_scan_bidirectional

        if bidirectional:
            def one():
                return selective_scan_bidirectional(*args, backend=name)
        else:
            def one():
                return (selective_scan(*args, backend=name),)

    grad = None

    def forward():  # inference: nothing kept for a backward
        with torch.no_grad():
            return one()

    def forward_backward():
        nonlocal grad
        outs = one()
        if grad is None:
            grad = torch.randn_like(outs[0])
        torch.autograd.backward(outs, [grad] * len(outs))
        for t in x.values():
            t.grad = None

    return forward, forward_backward


GPU_HEADERS = ["size (b, d, n, L)", "backend", "fwd ms", "fwd peak", "fwd/floor", "fwd+bwd ms", "f+b peak",
               "f+b/floor", "note"]


def gpu_rows(sizes, device="cuda", dtype=torch.bfloat16, backends=("triton", "chunked"), repeat=3,
             bandwidth=None, mamba=True):
    """One row per (size, backend), plus the bidirectional entry point of each backend and mamba_ssm."""
    if bandwidth is None:
        bandwidth = copy_bandwidth(device)
    itemsize = torch.empty((), dtype=dtype).element_size()
    names = [(b, False) for b in backends] + [(b, True) for b in backends] + ([("mamba_ssm", False)] if mamba else [])
    rows = []
    for size in sizes:
        batch, dim, state, length = size
        floor_f = floor_bytes(batch, dim, state, length, itemsize) / bandwidth
        floor_fb = floor_bytes(batch, dim, state, length, itemsize, backward=True) / bandwidth
        label = f"({batch}, {dim}, {state}, 2^{length.bit_length() - 1})" if length & (length - 1) == 0 else str(size)
        one_direction = {}
        for name, bidir in names:
            shown = f"{name} bidir" if bidir else name
            note = ""
            try:
                x = make_inputs(batch, dim, state, length, dtype, device)
                fwd, fb = scan_callables(name, x, bidirectional=bidir)
                t_f, m_f = measure(fwd, device, repeat)
                t_fb, m_fb = measure(fb, device, repeat)
            except ImportError as err:
                rows.append([label, shown, "-", "-", "-", "-", "-", "-", f"skipped: {err.name or err} not importable"])
                continue
            except torch.OutOfMemoryError:
                rows.append([label, shown, "-", "-", "-", "-", "-", "-", "out of memory"])
                continue
            finally:
                x = fwd = fb = None
                gc.collect()
                if torch.device(device).type == "cuda":
                    torch.cuda.empty_cache()
            if not bidir:
                one_direction[name] = (t_f, t_fb)
            elif name in one_direction:
                f1, fb1 = one_direction[name]
                note = f"{t_f / f1:.2f}x / {t_fb / fb1:.2f}x one direction"
            rows.append([
                label, shown, round(t_f * 1e3, 2), fmt_bytes(m_f) if m_f is not None else "-",
                round(t_f / floor_f / (2 if bidir else 1), 2), round(t_fb * 1e3, 2),
                fmt_bytes(m_fb) if m_fb is not None else "-", round(t_fb / floor_fb / (2 if bidir else 1), 2), note,
            ])
    return rows


def run_gpu(args):
    device = "cuda"
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, dtype bf16, z gate, softplus Δ")
    bandwidth = copy_bandwidth(device)
    print(f"device copy bandwidth: {bandwidth / 1e12:.2f} TB/s (read + write of a 1 GiB tensor copy)")
    print("floor = bytes that must be read and written (u, Δ, z, B, C, out; and their gradients) / bandwidth;")
    print("bidirectional rows divide by two floors (two outputs), their note compares with one direction\n")
    sizes = [tuple(int(v) for v in s.split(",")) for s in args.sizes] if args.sizes else GPU_SIZES
    rows = gpu_rows(sizes, device, torch.bfloat16, tuple(args.backends), args.repeat, bandwidth)
    print(table(GPU_HEADERS, rows))


# -------------------------------------------------------------------------------------------------- CPU
def run_cpu(args):
    torch.set_num_threads(args.threads)
    batch, dim, state, length = CPU_SIZE if args.length is None else (*CPU_SIZE[:3], args.length)
    print(f"CPU, {torch.get_num_threads()} threads, float32, z gate, softplus Δ, D; (batch, dim, state, length) = "
          f"({batch}, {dim}, {state}, {length}); best of {args.repeat}")
    # round-robin over the backends, best of ``repeat`` each: load from other jobs hits all of them alike
    calls = {name: scan_callables(name, make_inputs(batch, dim, state, length, torch.float32, "cpu"))
             for name in ("chunked", "loop", "reference")}
    best = {name: [float("inf"), float("inf")] for name in calls}
    for _ in range(args.repeat):
        for name, (fwd, fb) in calls.items():
            best[name][0] = min(best[name][0], measure(fwd, "cpu", 1)[0])
            if name != "reference":  # its autograd through per-position slices costs O(L^2): see below
                best[name][1] = min(best[name][1], measure(fb, "cpu", 1)[0])
    results = {name: (t_f, None if t_fb == float("inf") else t_fb) for name, (t_f, t_fb) in best.items()}
    del calls
    c_f, c_fb = results["chunked"]
    rows = []
    for name, (t_f, t_fb) in results.items():
        rows.append([name, round(t_f, 3), round(t_f / c_f, 2), "-" if t_fb is None else round(t_fb, 3),
                     "-" if t_fb is None else round(t_fb / c_fb, 2)])
    print(table(["backend", "fwd s", "fwd / chunked", "fwd+bwd s", "fwd+bwd / chunked"], rows))
    short = 2**10
    x = make_inputs(batch, dim, state, short, torch.float32, "cpu")
    ref_fb = min(measure(scan_callables("reference", x)[1], "cpu", 1)[0] for _ in range(args.repeat))
    ch_fb = min(measure(scan_callables("chunked", x)[1], "cpu", 1)[0] for _ in range(args.repeat))
    print(f"reference forward+backward at L = 2^10: {ref_fb:.3f} s, chunked {ch_fb:.4f} s "
          f"({ref_fb / ch_fb:.0f}x); the reference's backward grows faster than L")
    print(f"target: chunked >= 2.5x faster than the loop: forward {results['loop'][0] / c_f:.2f}x, "
          f"forward+backward {results['loop'][1] / c_fb:.2f}x\n")
    # large decays (a trained model) against init-like ones: the chunked scan should not slow down
    inputs = {label: decay_inputs(batch, dim, state, length, every, bias) for label, every, bias in DECAY_KINDS}
    calls = {label: scan_callables("chunked", x) for label, x in inputs.items()}
    best = {label: [float("inf"), float("inf")] for label in calls}
    for _ in range(args.repeat):
        for label, (fwd, fb) in calls.items():
            best[label][0] = min(best[label][0], measure(fwd, "cpu", 1)[0])
            best[label][1] = min(best[label][1], measure(fb, "cpu", 1)[0])
    base_f, base_fb = best[DECAY_KINDS[0][0]]
    rows = [[label, round(100 * hot_pair_fraction(inputs[label]), 1), round(t_f, 3), round(t_f / base_f, 2),
             round(t_fb, 3), round(t_fb / base_fb, 2)] for label, (t_f, t_fb) in best.items()]
    del inputs, calls
    print("chunked scan, init-like against large decays (hot % = blocks of 64 positions decaying past e^-120):")
    print(table(["input", "hot %", "fwd s", "fwd / init", "fwd+bwd s", "fwd+bwd / init"], rows))
    print()
    if not args.no_train:
        cmd = [sys.executable, __file__, "--train-child", "--threads", str(args.threads),
               "--train-length", str(args.train_length), "--train-steps", str(args.train_steps)]
        child = subprocess.run(cmd, capture_output=True, text=True, check=True)
        report = json.loads(child.stdout.strip().splitlines()[-1])
        loop_exp = report["length"] * TRAIN_DIM * TRAIN_STATE * 4
        rows = [
            ["chunked scan, measured peak RSS of the training process", fmt_bytes(report["peak_rss"])],
            ["exp(Δ·A) for every position (one tensor, computed)", fmt_bytes(loop_exp)],
            ["per-position loop under autograd (3 state tensors/position)",
             fmt_bytes(loop_activation_bytes(1, TRAIN_DIM, TRAIN_STATE, report["length"]))],
        ]
        print(f"training a one-layer toy model (dim {TRAIN_DIM}, state {TRAIN_STATE}) at L = {report['length']:,}: "
              f"{report['steps']} Adam steps, {report['seconds_per_step']:.1f} s/step, "
              f"loss {report['losses'][0]:.4f} -> {report['losses'][-1]:.4f}")
        print(table(["memory", "bytes"], rows))


def train_child(args):
    """Subprocess body: a few training steps at a million positions; prints one JSON line."""
    from genossm.ops.selective_scan import selective_scan

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    length, dim, state = args.train_length, TRAIN_DIM, TRAIN_STATE
    embed = torch.nn.Embedding(4, dim)
    in_proj = torch.nn.Linear(dim, 3 * dim + 2 * state)
    out_proj = torch.nn.Linear(dim, 4)
    A_log = torch.nn.Parameter(torch.log(torch.arange(1, state + 1, dtype=torch.float32)).repeat(dim, 1))
    D = torch.nn.Parameter(torch.ones(dim))
    dt_bias = torch.nn.Parameter(torch.full((dim,), -3.0))
    params = [*embed.parameters(), *in_proj.parameters(), *out_proj.parameters(), A_log, D, dt_bias]
    opt = torch.optim.Adam(params, lr=1e-3)
    tokens = torch.randint(0, 4, (1, length))
    target = torch.roll(tokens, -1, 1)  # predict the next token (the scan runs forwards)
    losses, times = [], []
    for _ in range(args.train_steps):
        start = time.perf_counter()
        proj = in_proj(embed(tokens)).transpose(1, 2)  # (1, 3·dim + 2·state, L)
        u, delta, z, B, C = proj.split([dim, dim, dim, state, state], 1)
        y = selective_scan(u.contiguous(), delta.contiguous(), -torch.exp(A_log), B.contiguous(), C.contiguous(),
                           D, z.contiguous(), dt_bias, True, backend="chunked")
        logits = out_proj(y.transpose(1, 2))
        loss = F.cross_entropy(logits.reshape(-1, 4), target.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        times.append(time.perf_counter() - start)
        del proj, u, delta, z, B, C, y, logits, loss
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    print(json.dumps(dict(length=length, steps=args.train_steps, losses=losses,
                          seconds_per_step=sum(times) / len(times), peak_rss=peak)))


# ------------------------------------------------------------------------------- side by side (--cpu)
SIDE_SIZES = [(1, 256, 16, 2**14), (1, 512, 16, 2**16)]
MAMBA_REF_MAX_BWD = 2**13  # its autograd backward over a Python loop per position: minutes at 2^14


def load_mamba_ref(src):
    """``selective_scan_ref`` of mamba_ssm, alone: its source is cut out of ``ops/selective_scan_interface.py``
    (from an sdist .tar.gz, an unpacked folder, or the installed package) and run with torch and einops, so
    neither the CUDA extension nor the rest of the package is imported."""
    name = "mamba_ssm/ops/selective_scan_interface.py"
    text = None
    if src and str(src).endswith((".tar.gz", ".tgz")):
        with tarfile.open(src) as tar:
            member = next(m for m in tar.getmembers() if m.name.endswith(name))
            text = tar.extractfile(member).read().decode()
    elif src:
        text = next(Path(src).rglob("selective_scan_interface.py")).read_text()
    else:
        import importlib.util

        spec = importlib.util.find_spec("mamba_ssm")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("mamba_ssm not found: pass --mamba-src (an sdist from pip download mamba-ssm)")
        text = (Path(list(spec.submodule_search_locations)[0]) / "ops" / "selective_scan_interface.py").read_text()
    tree = ast.parse(text)
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "selective_scan_ref")
    from einops import rearrange, repeat

    namespace = {"torch": torch, "F": F, "rearrange": rearrange, "repeat": repeat}
    exec(compile(ast.Module(body=[fn], type_ignores=[]), name, "exec"), namespace)  # noqa: S102
    return namespace["selective_scan_ref"]


def job_scan(cache, impl, size, mode, backend="chunked", mamba_src=None):
    """One timed scan call -> {"seconds"}; the first call for a (size, impl, mode) is a warm-up."""
    key = ("inputs", tuple(size))
    if key not in cache:
        cache.clear()  # one size alive at a time
        cache[key] = make_inputs(*size, torch.float32, "cpu")
    x = cache[key]
    args = (x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], True)
    if impl == "mamba":
        if "mamba" not in cache:
            cache["mamba"] = load_mamba_ref(mamba_src)
        ref = cache["mamba"]
        one = lambda: ref(*args)  # noqa: E731
    else:
        from genossm.ops.selective_scan import selective_scan

        one = lambda: selective_scan(*args, backend=backend)  # noqa: E731

    def run():
        if mode == "fwd":
            with torch.no_grad():
                one()
            return
        one().backward(torch.ones(size[0], size[1], size[3]))
        for t in x.values():
            t.grad = None

    warm = (impl, backend, mode)
    if warm not in cache:
        run()
        cache[warm] = True
    t0 = time.perf_counter()
    run()
    return {"seconds": time.perf_counter() - t0}


def side_by_side(args):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import side_by_side as sbs

    print(sbs.set_thread_policy(not args.spin))
    print(sbs.machine_line(), f"| torch {torch.__version__}")
    sizes = [(1, 64, 16, 2**10)] if args.quick else SIDE_SIZES
    mamba_ok = True
    try:
        load_mamba_ref(args.mamba_src)
    except Exception as err:  # noqa: BLE001
        print(f"no mamba_ssm column: {err}")
        mamba_ok = False
    cols = ["genossm", "genossm-chunked", "baseline", "mamba-ref"]
    results = {}
    with (sbs.baseline_tree() if not args.no_baseline else _null()) as base:
        for busy in [False, True] if args.contention else [False]:
            for threads in args.thread_counts:
                workers = {"genossm": sbs.Worker(__file__, threads)}
                if base:
                    workers["baseline"] = sbs.Worker(__file__, threads, root=base)
                if mamba_ok:
                    workers["mamba-ref"] = sbs.Worker(__file__, threads)
                try:
                    with sbs.busy_core(busy):
                        for size in sizes:
                            for mode in ("fwd", "fwd+bwd"):
                                calls, reps = {}, {}
                                for col in cols:
                                    w = workers.get("genossm" if col.startswith("genossm") else col)
                                    if w is None or (col == "mamba-ref" and mode != "fwd" and size[3] > MAMBA_REF_MAX_BWD):
                                        continue
                                    if col == "mamba-ref" and busy:
                                        continue  # slow, and not what the busy pass is about
                                    kw = dict(impl="mamba" if col == "mamba-ref" else "genossm", size=size, mode=mode,
                                              backend="auto" if col == "genossm" else "chunked",
                                              mamba_src=args.mamba_src)
                                    calls[col] = (lambda w=w, kw=kw: w.run("scan", **kw))
                                    # mamba-ref: minutes per call at these sizes, timed once
                                    reps[col] = 1 if col == "mamba-ref" else args.repeat
                                res = sbs.round_robin(calls, reps)
                                results[(busy, threads, size, mode)] = res
                                parts = [f"{k} {v.get('seconds', v.get('error'))}" for k, v in res.items()]
                                print(f"  [{'busy' if busy else 'idle'}, {threads} threads] {size} {mode}: "
                                      + ", ".join(parts) + f"  ({sbs.load_line()})", flush=True)
                finally:
                    for w in workers.values():
                        w.close()
    for busy in sorted({k[0] for k in results}):
        print()
        print(("beside a busy process (one core at 100 %)" if busy else "idle machine")
              + f", {sbs.load_line()}; float32, z gate, softplus Δ, D; seconds, best of {args.repeat} round-robin;"
              f" genossm = backend auto (the fused C kernel), baseline = chunked at {sbs.BASELINE}")
        headers = ["threads", "size (b, d, n, L)", "pass"] + [f"{c} s" for c in cols]
        headers += ["genossm / baseline", "genossm-chunked / baseline", "genossm / mamba-ref"]
        rows = []
        for (b, threads, size, mode), res in results.items():
            if b == busy:
                rows.append([threads, str(size), mode] + [sbs.cell(res.get(c)) for c in cols]
                            + [sbs.ratio(res.get("genossm"), res.get("baseline")),
                               sbs.ratio(res.get("genossm-chunked"), res.get("baseline")),
                               sbs.ratio(res.get("genossm"), res.get("mamba-ref"))])
        print(sbs.table(headers, rows))
    if args.contention:
        print()
        print("slowdown beside a busy process (seconds busy / seconds idle)")
        rows = []
        for (b, threads, size, mode), res in results.items():
            if b:
                idle = results[(False, threads, size, mode)]
                rows.append([threads, str(size), mode] + [sbs.ratio(idle.get(c), res.get(c)) for c in cols])
        print(sbs.table(["threads", "size (b, d, n, L)", "pass"] + cols, rows))
    print()


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu", action="store_true", help="CPU mode (the default without CUDA)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--length", type=int, default=None, help="CPU table length (default 2^14)")
    parser.add_argument("--no-train", action="store_true", help="CPU mode: skip the L = 2^20 training run")
    parser.add_argument("--train-length", type=int, default=TRAIN_LEN)
    parser.add_argument("--train-steps", type=int, default=2)
    parser.add_argument("--train-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", nargs="*", help="GPU sizes as b,d,n,L (default: the four of the design note)")
    parser.add_argument("--backends", nargs="*", default=["triton", "chunked"])
    parser.add_argument("--quick", action="store_true", help="CPU side by side at a tiny size only")
    parser.add_argument("--contention", action="store_true", help="CPU side by side again beside a busy process")
    parser.add_argument("--thread-counts", type=int, nargs="*", default=[2, 1], help="CPU side by side threads")
    parser.add_argument("--mamba-src", default=None, help="mamba_ssm sdist (.tar.gz) or folder for selective_scan_ref")
    parser.add_argument("--no-baseline", action="store_true", help="CPU side by side without the baseline commit")
    parser.add_argument("--no-details", action="store_true", help="CPU: only the side-by-side table")
    parser.add_argument("--spin", action="store_true", help="leave OMP_WAIT_POLICY unset (spinning OpenMP threads)")
    args = parser.parse_args(argv)
    if args.train_child:
        train_child(args)
    elif args.cpu or not torch.cuda.is_available():
        side_by_side(args)
        if not (args.no_details or args.quick):
            run_cpu(args)
    else:
        run_gpu(args)


if __name__ == "__main__":
    main()
