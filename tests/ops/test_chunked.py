"""The chunked scan against the reference: values and every input gradient, all options, both directions."""

import functools
import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from genossm.ops.selective_scan import selective_scan
from genossm.ops.selective_scan.chunked import _needs_clamp, _tree_scan, auto_block_len, selective_scan_chunked
from genossm.ops.selective_scan.reference import selective_scan_ref

import scan_cases
from scan_cases import BF16_TOL, NAMES, hot_inputs, make, run

compare = functools.partial(scan_cases.compare, scan=selective_scan_chunked)
compare64 = functools.partial(scan_cases.compare64, scan=selective_scan_chunked)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("length", [1, 7, 16, 17, 63])
def test_lengths_and_direction(length, reverse):
    compare(make(length=length, initial_state=True), reverse=reverse, block_len=16)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("z,bias,softplus", [(False, False, False), (True, False, True), (False, True, True),
                                             (True, True, False)])
def test_gate_bias_softplus(z, bias, softplus, reverse):
    compare(make(length=37, z=z, bias=bias), softplus=softplus, reverse=reverse, block_len=8)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("groups", [1, 2, 4])
def test_grouped_B_C(groups, reverse):
    compare(make(dim=8, length=30, groups=groups, initial_state=True), reverse=reverse, block_len=8)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("length", [65, 300])
def test_default_block(length, reverse):
    # tiny dims: the automatic block is 256 positions, so 300 positions take two blocks
    assert auto_block_len(1, 6, 4) == 256
    compare(make(batch=1, dim=6, state=4, length=length, initial_state=True, delta_scale=0.3), reverse=reverse)


def test_auto_block_len():
    assert auto_block_len(1, 256, 16) == 128  # 2^19 values / 4096 per position
    assert auto_block_len(1, 200, 16) == 128  # 163 rounded down to a power of two
    assert auto_block_len(1, 64, 16) == 256  # capped
    assert auto_block_len(2, 1024, 16) == 64  # at least 64
    assert auto_block_len(8, 128, 16) == 64


@pytest.mark.parametrize("reverse", [False, True])
def test_bfloat16(reverse):
    x = make(length=45, groups=2, initial_state=True, dtype=torch.bfloat16)
    # same bf16 inputs, both compute in fp32: differences come from rounding the results to bf16
    compare(x, reverse=reverse, tol=BF16_TOL, block_len=16)
    out = run(selective_scan_chunked, x, True, reverse)[0]
    assert out.dtype == torch.bfloat16 and x["u"].dtype == torch.bfloat16


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("length,block_len", [(40, 16), (130, 64)])
def test_huge_decays_in_every_channel(length, block_len, reverse):
    # every channel forgets its state within a position or two: the result is nearly Δ B u per position
    compare64(hot_inputs(length=length), reverse=reverse, block_len=block_len)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("hot_every", [2, 5])
def test_mixed_huge_and_small_decays(hot_every, reverse):
    compare64(hot_inputs(dim=10, length=70, hot_every=hot_every, groups=2), reverse=reverse, block_len=16)


@pytest.mark.parametrize("reverse", [False, True])
def test_decays_through_the_subnormal_range(reverse):
    # per-position decays e^-30..e^-110 (products of a few of them underflow through subnormal floats to 0),
    # growing Δ along the sequence so that blocks mix moderate and vanishing memory
    x = make(dim=6, length=48, initial_state=True, bias=False)
    with torch.no_grad():
        x["A"].fill_(-1.0)
        x["delta"].copy_(torch.linspace(30.0, 110.0, 48).expand(2, 6, 48))
    compare64(x, softplus=False, reverse=reverse, block_len=16)


def test_clamp_only_when_a_decay_can_pass_e_minus_87():
    A = torch.tensor([[-1.0, -16.0]]).T.contiguous()  # An layout (g=1, state=2, k=1)
    assert not _needs_clamp(torch.full((1, 1, 5), 5.0), A[None])  # 5 · 16 = 80
    assert _needs_clamp(torch.full((1, 1, 5), 6.0), A[None])  # 96
    assert _needs_clamp(torch.tensor([[[0.1, -6.0]]]), A[None])  # negative Δ: |Δ A| counts
    assert not _needs_clamp(torch.zeros(1, 1, 0), A[None])


@pytest.mark.parametrize("reverse", [False, True])
def test_growing_states_match_the_reference(reverse):
    # negative Δ without softplus makes exp(Δ A) > 1: the state grows, as the recurrence says
    x = make(dim=4, length=33, initial_state=True, bias=False)
    with torch.no_grad():
        x["delta"].sub_(0.6)
    compare(x, softplus=False, reverse=reverse, tol=5e-5, block_len=8)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("length", [1, 2, 3, 4, 5, 7, 15, 16, 17, 63, 64, 65, 100])
def test_tree_scan_matches_stepping(length, reverse):
    gen = torch.Generator().manual_seed(length)
    al = torch.rand(length, 3, 5, generator=gen)
    al[torch.rand(length, 3, 5, generator=gen) < 0.1] = 0.0  # a state forgotten entirely
    x = torch.randn(length, 3, 5, generator=gen)
    h0 = torch.randn(3, 5, generator=gen)
    expected = torch.empty_like(x)
    h = h0.double()
    for t in range(length - 1, -1, -1) if reverse else range(length):
        h = al[t].double() * h + x[t].double()
        expected[t] = h.float()
    got = _tree_scan(al.clone(), x.clone(), h0, reverse)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("reverse", [False, True])
def test_pieces_with_carried_state_equal_one_pass(reverse):
    x = make(batch=2, dim=4, state=3, length=50, groups=2, initial_state=True)
    cuts = [0, 13, 14, 33, 50]
    whole, last = run(selective_scan_chunked, x, True, reverse, block_len=8)
    pieces = list(zip(cuts[:-1], cuts[1:]))
    outs = {}
    h = x["initial_state"]
    for a, b in reversed(pieces) if reverse else pieces:
        piece = dict(x, initial_state=h)
        for name in ("u", "delta", "B", "C", "z"):
            piece[name] = x[name][..., a:b]
        outs[a], h = run(selective_scan_chunked, piece, True, reverse, block_len=8)
    joined = torch.cat([outs[a] for a, _ in pieces], -1)
    torch.testing.assert_close(joined, whole, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(h, last, rtol=1e-5, atol=1e-5)
    # gradients flow through the carried states exactly as through the single pass
    g_out = torch.randn(whole.shape, generator=torch.Generator().manual_seed(2))
    names = list(NAMES)
    g_whole = torch.autograd.grad((whole * g_out).sum() + last.sum(), [x[n] for n in names])
    g_joined = torch.autograd.grad((joined * g_out).sum() + h.sum(), [x[n] for n in names])
    for name, a, b in zip(names, g_joined, g_whole):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4, msg=name)


def loop_scan_forward(u, delta, A, B, C, D):
    """Tidy per-position loop in float64 (vectorised over batch, channels and state), forward only."""
    u, delta, A, B, C, D = (t.double() for t in (u, delta, A, B, C, D))
    h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys = []
    for dt_t, du_t, B_t, C_t in zip(*(t.movedim(-1, 0) for t in (delta, delta * u, B, C))):
        h = torch.exp(dt_t[..., None] * A) * h + B_t[:, None, :] * du_t[..., None]
        ys.append((h * C_t[:, None, :]).sum(-1))
    return torch.stack(ys, -1) + D[None, :, None] * u, h


@pytest.mark.slow
def test_long_sequence_matches_loop():
    batch, dim, state, length = 1, 8, 16, 2**16
    gen = torch.Generator().manual_seed(3)
    u = torch.randn(batch, dim, length, generator=gen)
    delta = F.softplus(torch.randn(batch, dim, length, generator=gen) - 2)
    A = -torch.exp(torch.randn(dim, state, generator=gen))
    B = torch.randn(batch, state, length, generator=gen)
    C = torch.randn(batch, state, length, generator=gen)
    D = torch.randn(dim, generator=gen)
    out, last = selective_scan_chunked(u, delta, A, B, C, D, return_last_state=True)
    ref, ref_last = loop_scan_forward(u, delta, A, B, C, D)
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(last.double(), ref_last, rtol=1e-4, atol=1e-4)


def test_saves_block_boundaries_not_every_state():
    # what autograd keeps for the backward: the inputs, the ungated output and one state per block
    batch, dim, state, length, block = 1, 64, 16, 4096, 64
    x = make(batch=batch, dim=dim, state=state, length=length, delta_scale=0.1)
    saved = []

    def pack(t):
        saved.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = selective_scan_chunked(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"],
                                     True, block_len=block)
    inputs = sum(v.numel() * v.element_size() for v in x.values() if v is not None)
    boundaries = (length // block) * batch * dim * state * 4
    assert sum(saved) <= inputs + out.numel() * 4 + boundaries
    assert sum(saved) < batch * dim * state * length * 4 / 2  # far below one per-position state tensor
    out.sum().backward()
    assert x["u"].grad is not None


def test_dispatcher_uses_chunked_on_cpu():
    # "auto" means chunked on CPU when the fused C kernel (backend "cpu", tests/ops/test_cpu.py) is unavailable
    from genossm.ops.selective_scan import resolve_backend

    x = make(length=25, initial_state=True)
    direct = run(selective_scan_chunked, x, True, False)
    for backend in ("auto", "chunked") if resolve_backend("auto", x["u"]) == "chunked" else ("chunked",):
        via = selective_scan(
            x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], True, True,
            initial_state=x["initial_state"], backend=backend,
        )
        torch.testing.assert_close(via[0], direct[0], rtol=0, atol=0)
        torch.testing.assert_close(via[1], direct[1], rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_inputs_left_unchanged(dtype):
    x = make(length=20, bias=False, initial_state=True, dtype=dtype)
    before = {n: v.detach().clone() for n, v in x.items() if v is not None}
    out, last = run(selective_scan_chunked, x, True, False, block_len=8)
    (out.float().sum() + last.sum()).backward()
    for name in before:
        v = x[name]
        assert torch.equal(v.detach(), before[name]), name


def test_no_grad_and_without_last_state():
    x = make(length=10)
    with torch.no_grad():
        out = selective_scan_chunked(x["u"], x["delta"], x["A"], x["B"], x["C"])
    ref = selective_scan_ref(x["u"], x["delta"], x["A"], x["B"], x["C"])
    assert isinstance(out, torch.Tensor) and not out.requires_grad
    torch.testing.assert_close(out, ref.detach(), rtol=1e-5, atol=1e-5)


def test_zero_length():
    x = make(length=0, initial_state=True)
    out, last = run(selective_scan_chunked, x, True, False)
    assert out.shape == (2, 4, 0)
    torch.testing.assert_close(last, x["initial_state"].detach())


@pytest.mark.parametrize("bad", ["delta", "A", "B", "groups", "D", "initial_state"])
def test_shape_errors(bad):
    x = make(length=6, initial_state=True)
    if bad == "delta":
        x["delta"] = x["delta"][..., :5]
    elif bad == "A":
        x["A"] = x["A"][:3]
    elif bad == "B":
        x["B"] = x["B"][:, :2]
    elif bad == "groups":
        x["B"] = torch.randn(2, 3, 3, 6)
        x["C"] = torch.randn(2, 3, 3, 6)
    elif bad == "D":
        x["D"] = torch.randn(5)
    else:
        x["initial_state"] = torch.randn(2, 4, 2)
    with pytest.raises(ValueError, match=bad if bad != "groups" else "divisible"):
        run(selective_scan_chunked, x, True, False)


# --------------------------------------------------------------------------------- benchmarks/scan.py
def load_benchmark():
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "scan.py"
    spec = importlib.util.spec_from_file_location("scan_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_floor_bytes():
    bench = load_benchmark()
    # (1, 2048, 16, 2^20) bf16: u, Δ, z read and out written (2^31 values of 2 bytes each), B and C read
    fwd = bench.floor_bytes(1, 2048, 16, 2**20, 2)
    assert fwd == 4 * 2**31 * 2 + 2 * 16 * 2**20 * 2
    assert 17.1e9 < fwd < 17.3e9  # the ≈ 17 GB of the design note
    both = bench.floor_bytes(1, 2048, 16, 2**20, 2, backward=True)
    # backward: u, Δ, z, dout read and du, dΔ, dz written; B, C read and dB, dC written
    assert both - fwd == 7 * 2**31 * 2 + 4 * 16 * 2**20 * 2
    assert bench.floor_bytes(2, 8, 4, 10, 4, groups=2) == 4 * 2 * 8 * 10 * 4 + 2 * 2 * 2 * 4 * 10 * 4
    # a per-position loop keeps three (batch, dim, state) float32 tensors per position
    assert bench.loop_activation_bytes(1, 64, 16, 2**20) == 3 * 64 * 16 * 2**20 * 4


def test_benchmark_gpu_path_runs_on_cpu_tensors():
    bench = load_benchmark()
    rows = bench.gpu_rows([(1, 8, 4, 96)], device="cpu", dtype=torch.float32, backends=("chunked",), repeat=1,
                          bandwidth=1e10)
    names = {r[1] for r in rows}
    assert "chunked" in names and "chunked bidir" in names
    assert any("mamba_ssm" in r[1] for r in rows)  # present as a row, skipped with a note when absent
    text = bench.table(bench.GPU_HEADERS, rows)
    header, rule, *body = text.splitlines()
    starts = [i for i in range(len(rule)) if rule[i] == "-" and (i == 0 or rule[i - 1] == " ")]
    assert [header.index(h) for h in bench.GPU_HEADERS] == starts  # every column starts where its rule starts
    assert len(body) == len(rows)


@pytest.mark.parametrize("reverse", [False, True])
def test_benchmark_loop_matches_reference(reverse):
    bench = load_benchmark()
    x = make(length=30, groups=None)
    args = (x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], True)
    torch.testing.assert_close(bench.loop_scan(*args, reverse=reverse), selective_scan_ref(*args, reverse=reverse),
                               rtol=1e-5, atol=1e-5)


def test_benchmark_hot_pair_fraction():
    bench = load_benchmark()
    dt = torch.tensor([1.0, 0.9, 2.0])  # per channel; max |A| = 2, blocks of 64 and 36 positions
    x = dict(delta=torch.zeros(1, 3, 100), delta_bias=torch.log(torch.expm1(dt)), A=torch.tensor([[-2.0, -1.0]] * 3))
    # channel 0: 128 (hot), 72; channel 1: 115.2, 64.8; channel 2: 256 (hot), 144 (hot) -> 3 of 6 blocks
    assert bench.hot_pair_fraction(x) == pytest.approx(0.5)
    hot = bench.decay_inputs(1, 20, 4, 128, hot_every=10, hot_bias=50.0)
    assert bench.hot_pair_fraction(hot) == pytest.approx(0.1)
    assert bench.hot_pair_fraction(bench.decay_inputs(1, 20, 4, 128)) == 0.0


def test_inference_keeps_no_block_states(monkeypatch):
    """Under torch.no_grad() (or with no input requiring a gradient) nothing is saved for a backward;
    with gradients the block-boundary states are saved and serve the backward."""
    import genossm.ops.selective_scan.chunked as ch

    seen = []
    real = ch._ChunkedScan.forward

    def spy(ctx, *args):
        seen.append(args[-1])  # the ``save`` argument
        return real(ctx, *args)

    monkeypatch.setattr(ch._ChunkedScan, "forward", staticmethod(spy))
    gen = torch.Generator().manual_seed(0)
    u, delta, z = (torch.randn(1, 4, 40, generator=gen) for _ in range(3))
    A = -torch.rand(4, 3, generator=gen) - 0.5
    B, C = torch.randn(1, 3, 40, generator=gen), torch.randn(1, 3, 40, generator=gen)
    args = [u, delta, A, B, C, None, z]
    for t in args:
        if t is not None:
            t.requires_grad_(True)
    with torch.no_grad():
        out = selective_scan_chunked(*args, None, True, block_len=16)
    selective_scan_chunked(*[t.detach() if t is not None else None for t in args], None, True, block_len=16)
    assert seen == [False, False]
    again = selective_scan_chunked(*args, None, True, block_len=16)
    assert seen[-1] is True
    torch.testing.assert_close(again.detach(), out)
    again.sum().backward()
    assert u.grad is not None and A.grad is not None
