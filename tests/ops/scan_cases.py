"""The cases every selective-scan backend is checked on, shared by test_chunked, test_cpu and test_triton:
input makers, the float64 recurrence, tolerances, one ``assert_close``, and backend-vs-reference comparisons.

Imported as ``scan_cases`` (pytest puts tests/ops on sys.path). It imports no backend that needs more than
torch: the Triton tests bring their own kernel module.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from genossm.ops.selective_scan.reference import selective_scan_ref

NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")

TOL = 2e-5  # float32 against the reference, relative to the largest magnitude
GRAD_FACTOR = 5  # gradients sum many more terms than values: TOL * GRAD_FACTOR
BF16_TOL = 1.6e-2  # bf16 inputs and outputs, both sides computing in float32: the final rounding


@dataclass(frozen=True)
class Spread:
    """How the random inputs are spread: Δ ~ U[0, delta_scale) + delta_shift, A ~ -(U[0, a_scale) + a_shift),
    delta_bias ~ N(0, bias_scale)."""

    delta_scale: float
    delta_shift: float
    a_scale: float
    a_shift: float
    bias_scale: float


WIDE = Spread(delta_scale=1.0, delta_shift=0.0, a_scale=2.0, a_shift=0.1, bias_scale=0.5)
# positive Δ without softplus, around zero with it, like a trained model's projections
TRAINED = Spread(delta_scale=0.6, delta_shift=0.05, a_scale=1.5, a_shift=0.3, bias_scale=0.3)


def make(batch=2, dim=4, state=3, length=20, groups=None, dtype=torch.float32, z=True, bias=True,
         initial_state=False, delta_scale=1.0, seed=0, D=True, *, spread: Spread = WIDE, device="cpu"):
    """Random scan inputs (all requiring gradients), drawn on the CPU from ``seed`` then moved to ``device``:
    u, delta, z, B, C in ``dtype``; A, D, delta_bias, initial_state in float32."""
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen) * scale).to(device)

    bc = (batch, state, length) if groups is None else (batch, groups, state, length)
    x = dict(
        u=rnd(batch, dim, length).to(dtype),
        delta=(torch.rand(batch, dim, length, generator=gen) * (delta_scale * spread.delta_scale)
               + spread.delta_shift).to(device).to(dtype),
        A=-(torch.rand(dim, state, generator=gen) * spread.a_scale + spread.a_shift).to(device),
        B=rnd(*bc).to(dtype),
        C=rnd(*bc).to(dtype),
        D=rnd(dim) if D else None,
        z=rnd(batch, dim, length).to(dtype) if z else None,
        delta_bias=rnd(dim, scale=spread.bias_scale) if bias else None,
        initial_state=rnd(batch, dim, state) if initial_state else None,
    )
    for v in x.values():
        if v is not None:
            v.requires_grad_(True)
    return x


def hot_inputs(dim=8, length=40, hot_every=1, seed=0, **kw):
    """Inputs whose channels d % hot_every == 0 decay by e^-50..e^-1600 per position (Δ ≈ 3..100, A ≈ -16)."""
    x = make(dim=dim, length=length, initial_state=True, bias=True, seed=seed, **kw)
    gen = torch.Generator().manual_seed(seed + 7)
    with torch.no_grad():
        hot = torch.arange(dim) % hot_every == 0
        x["A"][hot] = -16 + torch.rand(int(hot.sum()), x["A"].shape[1], generator=gen)
        x["delta_bias"][hot] = torch.linspace(3.0, 100.0, int(hot.sum()))  # softplus(bias + [0, 1)) ≈ bias
    return x


def run(fn, x, softplus, reverse, **kw):
    """``fn`` (a backend, or the reference) on ``x``: (out, last state)."""
    return fn(
        x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], softplus, True,
        reverse=reverse, initial_state=x["initial_state"], **kw,
    )


def run_with_grads(fn, x, softplus, reverse, last, cotangents=None, device="cpu", **kw):
    """Output (and last state) plus the gradient of every given input for fixed random cotangents."""
    res = fn(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], softplus, last,
             reverse=reverse, initial_state=x["initial_state"], **kw)
    outs = res if isinstance(res, tuple) else (res,)
    if cotangents is None:
        gen = torch.Generator().manual_seed(123)
        cotangents = [torch.randn(o.shape, generator=gen).to(device) for o in outs]
    loss = sum((o.float() * c).sum() for o, c in zip(outs, cotangents))
    names = [k for k in NAMES if x[k] is not None]
    grads = torch.autograd.grad(loss, [x[k] for k in names])
    return [o.detach() for o in outs], dict(zip(names, grads)), cotangents


def grads(x, out, last, g_out, g_last):
    names = [n for n in NAMES if x[n] is not None]
    loss = (out.float() * g_out).sum() + (last * g_last).sum()
    return dict(zip(names, torch.autograd.grad(loss, [x[n] for n in names])))


def assert_close(actual, expected, tol, what="", *, floor=0.0, eps=1e-6):
    """Max error within ``tol`` times max(floor, the largest magnitude of ``expected`` + eps): relative to the
    largest magnitude, since gradients span orders of magnitude between entries (``floor=1, eps=0``: absolute
    for values below one)."""
    err = (actual.float() - expected.float()).abs().max().item()
    scale = max(floor, expected.float().abs().max().item() + eps)
    assert err <= tol * scale, f"{what}: max error {err:.3g} > {tol} x {scale:.3g}"


def compare(x, softplus=True, reverse=False, tol=TOL, *, scan, **kw):
    """``scan`` (a backend) against the reference: values, last state, every input gradient."""
    out_r, last_r = run(selective_scan_ref, x, softplus, reverse)
    out_c, last_c = run(scan, x, softplus, reverse, **kw)
    assert out_c.dtype == x["u"].dtype and out_c.shape == out_r.shape
    assert last_c.dtype == torch.float32 and last_c.shape == last_r.shape
    assert_close(out_c, out_r, tol, "out")
    assert_close(last_c, last_r, tol, "last state")
    gen = torch.Generator().manual_seed(1)
    g_out = torch.randn(out_r.shape, generator=gen)
    g_last = torch.randn(last_r.shape, generator=gen)
    gr = grads(x, out_r, last_r, g_out, g_last)
    gc = grads(x, out_c, last_c, g_out, g_last)
    for name in gr:
        assert gc[name].dtype == gr[name].dtype and gc[name].shape == gr[name].shape, name
        assert_close(gc[name], gr[name], tol * GRAD_FACTOR, f"grad {name}")


def scan64(x, softplus, reverse):
    """The recurrence of reference.py in float64 (the reference computes in float32), with autograd."""
    v = {n: (t.detach().double().requires_grad_(True) if t is not None else None) for n, t in x.items()}
    dt = v["delta"] + (v["delta_bias"][None, :, None] if v["delta_bias"] is not None else 0)
    dt = F.softplus(dt) if softplus else dt
    batch, dim, length = v["u"].shape
    Bx, Cx = (t.unsqueeze(1) if t.dim() == 3 else t.repeat_interleave(dim // t.shape[1], 1) for t in (v["B"], v["C"]))
    h = v["initial_state"] if v["initial_state"] is not None else v["u"].new_zeros(batch, dim, v["A"].shape[1])
    ys = [None] * length
    for t in range(length - 1, -1, -1) if reverse else range(length):
        h = torch.exp(dt[..., t, None] * v["A"]) * h + (dt[..., t] * v["u"][..., t])[..., None] * Bx[..., t]
        ys[t] = (h * Cx[..., t]).sum(-1)
    out = torch.stack(ys, -1) + v["D"][None, :, None] * v["u"]
    if v["z"] is not None:
        out = out * F.silu(v["z"])
    return v, out, h


def compare64(x, softplus=True, reverse=False, tol=TOL, *, scan, **kw):
    """``scan`` (float32) against the float64 recurrence: values, last state, every gradient; all finite."""
    v, out_r, last_r = scan64(x, softplus, reverse)
    out_c, last_c = run(scan, x, softplus, reverse, **kw)
    assert torch.isfinite(out_c).all() and torch.isfinite(last_c).all()
    assert_close(out_c, out_r, tol, "out")
    assert_close(last_c, last_r, tol, "last state")
    gen = torch.Generator().manual_seed(1)
    g_out = torch.randn(out_c.shape, generator=gen)
    g_last = torch.randn(last_c.shape, generator=gen)
    gc = grads(x, out_c, last_c, g_out, g_last)
    names = list(gc)
    gr = torch.autograd.grad((out_r * g_out.double()).sum() + (last_r * g_last.double()).sum(), [v[n] for n in names])
    for name, expected in zip(names, gr):
        assert torch.isfinite(gc[name]).all(), name
        assert_close(gc[name], expected, tol * GRAD_FACTOR, f"grad {name}")
