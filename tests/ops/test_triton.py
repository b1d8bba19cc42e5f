"""The fused Triton selective scan against the sequential reference, value and every input gradient.

Without CUDA the kernels run in Triton's CPU interpreter: TRITON_INTERPRET must be set before the
kernels are decorated (when ``genossm.ops.selective_scan.triton`` is imported), so this module sets it
first and reloads the kernel module if something imported it earlier. The interpreter is slow (its
scans are Python loops), so shapes here are tiny; the ``gpu`` tests repeat the checks at real sizes.
"""

import functools
import importlib
import os

import pytest
import torch

CUDA = torch.cuda.is_available()
if not CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from genossm.ops.selective_scan import selective_scan  # noqa: E402
from genossm.ops.selective_scan.reference import selective_scan_ref  # noqa: E402

# (genossm.ops re-exports the function selective_scan, which shadows the package name as an attribute)
tri = importlib.import_module("genossm.ops.selective_scan.triton")

if not CUDA and not tri.interpreting():
    tri = importlib.reload(tri)

import scan_cases  # noqa: E402
from scan_cases import NAMES, TRAINED, assert_close  # noqa: E402

DEVICE = "cuda" if CUDA else "cpu"


def make_inputs(batch=2, dim=4, state=4, length=21, **kw):
    """The shared cases' inputs, spread like a trained model's, on the device the kernels run on."""
    return scan_cases.make(batch, dim, state, length, spread=TRAINED, device=DEVICE, **kw)


run = functools.partial(scan_cases.run_with_grads, device=DEVICE)
close = functools.partial(assert_close, floor=1.0, eps=0.0)  # relative above one, absolute below


def compare(x, softplus, reverse, last, tol, **kw):
    out_t, grads_t, cot = run(tri.selective_scan_triton, x, softplus, reverse, last, **kw)
    out_r, grads_r, _ = run(selective_scan_ref, x, softplus, reverse, last, cotangents=cot)
    for i, (a, b) in enumerate(zip(out_t, out_r)):
        assert a.dtype == b.dtype and a.shape == b.shape
        close(a, b, tol, f"output {i}")
    assert grads_t.keys() == grads_r.keys()
    for k in grads_r:
        assert grads_t[k].shape == grads_r[k].shape and grads_t[k].dtype == grads_r[k].dtype, k
        close(grads_t[k], grads_r[k], tol, f"d{k}")


CASES = {
    # name: (make_inputs kwargs, softplus)
    "plain": (dict(z=False, D=False, bias=False), False),
    "gated-softplus-bias": (dict(), True),
    "gate-no-softplus": (dict(bias=False), False),
    "grouped-bc": (dict(dim=8, groups=2), True),
    "state-5-padded": (dict(state=5, D=False), True),
}


@pytest.mark.slow
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("case", list(CASES))
def test_fp32_matches_reference(case, reverse):
    kwargs, softplus = CASES[case]
    x = make_inputs(**kwargs)
    compare(x, softplus, reverse, last=False, tol=2e-5, tile_len=8, tiles_per_chunk=2)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_half_precision_inputs_match_reference(dtype, reverse):
    # Both sides read the same rounded inputs and compute in float32; they differ by the final rounding.
    x = make_inputs(dtype=dtype, groups=2, length=19)
    tol = 2e-2 if dtype == torch.bfloat16 else 4e-3
    compare(x, True, reverse, last=True, tol=tol, tile_len=8, tiles_per_chunk=1)


@pytest.mark.slow
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_initial_state_and_last_state_with_gradients(reverse):
    x = make_inputs(initial_state=True, length=23)
    compare(x, True, reverse, last=True, tol=2e-5, tile_len=4, tiles_per_chunk=3)


@pytest.mark.slow
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_pieces_with_carried_state_equal_one_pass(reverse):
    """A sequence cut in pieces, the state carried from piece to piece, equals one pass: outputs,
    final state and gradients (through the carried states)."""
    x = make_inputs(length=30, initial_state=True)
    cfg = dict(tile_len=4, tiles_per_chunk=2)
    full_out, full_grads, cot = run(tri.selective_scan_triton, x, True, reverse, True, **cfg)

    cuts = [0, 7, 19, 30]
    pieces = list(zip(cuts[:-1], cuts[1:]))
    if reverse:
        pieces = pieces[::-1]
    state = x["initial_state"]
    outs = {}
    for lo, hi in pieces:
        piece = lambda t: t[..., lo:hi]  # noqa: E731
        outs[lo], state = tri.selective_scan_triton(
            piece(x["u"]), piece(x["delta"]), x["A"], piece(x["B"]), piece(x["C"]), x["D"], piece(x["z"]),
            x["delta_bias"], True, True, reverse=reverse, initial_state=state, **cfg)
    out = torch.cat([outs[lo] for lo, _ in zip(cuts[:-1], cuts[1:])], dim=-1)
    close(out, full_out[0], 1e-5, "output")
    close(state, full_out[1], 1e-5, "last state")
    loss = (out * cot[0]).sum() + (state * cot[1]).sum()
    names = list(full_grads)
    grads = torch.autograd.grad(loss, [x[k] for k in names])
    for k, g in zip(names, grads):
        close(g, full_grads[k], 2e-5, f"d{k}")


@pytest.mark.slow
def test_bidirectional_equals_two_single_scans_and_reference():
    x = make_inputs(dim=8, groups=2, length=26)
    args = [x[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
    cfg = dict(tile_len=8, tiles_per_chunk=2)
    out_f, out_r = tri.selective_scan_bidirectional_triton(*args, True, **cfg)
    gen = torch.Generator().manual_seed(5)
    cf, cr = (torch.randn(out_f.shape, generator=gen).to(DEVICE) for _ in range(2))
    grads = torch.autograd.grad((out_f * cf).sum() + (out_r * cr).sum(), args)

    single_f = tri.selective_scan_triton(*args, True, reverse=False, **cfg)
    single_r = tri.selective_scan_triton(*args, True, reverse=True, **cfg)
    grads_single = torch.autograd.grad((single_f * cf).sum() + (single_r * cr).sum(), args)
    ref_f = selective_scan_ref(*args, True)
    ref_r = selective_scan_ref(*args, True, reverse=True)
    grads_ref = torch.autograd.grad((ref_f * cf).sum() + (ref_r * cr).sum(), args)

    close(out_f, single_f, 1e-6, "forward output vs single")
    close(out_r, single_r, 1e-6, "reverse output vs single")
    close(out_f, ref_f, 2e-5, "forward output vs reference")
    close(out_r, ref_r, 2e-5, "reverse output vs reference")
    for name, g, gs, gr in zip(NAMES, grads, grads_single, grads_ref):
        close(g, gs, 2e-5, f"d{name} vs single")
        close(g, gr, 2e-5, f"d{name} vs reference")


def test_bidirectional_through_public_api():
    x = make_inputs(z=False, length=11)
    args = [x[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
    with torch.no_grad():
        out_f, out_r = tri.selective_scan_bidirectional_triton(*args, False, tile_len=4, tiles_per_chunk=2)
        ref_f = selective_scan_ref(*args, False)
        ref_r = selective_scan_ref(*args, False, reverse=True)
    close(out_f, ref_f, 2e-5, "forward")
    close(out_r, ref_r, 2e-5, "reverse")


@pytest.mark.parametrize("length", [1, 2, 5, 16, 17, 33])
@pytest.mark.parametrize("tile_len,tiles_per_chunk", [(4, 1), (8, 3), (16, 2)])
def test_lengths_and_chunkings_forward(length, tile_len, tiles_per_chunk):
    """Lengths that are and are not multiples of the tile and the chunk, both directions, last state."""
    x = make_inputs(batch=1, length=length, initial_state=True)
    args = [x[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
    cfg = dict(tile_len=tile_len, tiles_per_chunk=tiles_per_chunk)
    with torch.no_grad():
        for reverse in (False, True):
            out, last = tri.selective_scan_triton(*args, True, True, reverse=reverse,
                                                  initial_state=x["initial_state"], **cfg)
            ref, ref_last = selective_scan_ref(*args, True, True, reverse=reverse, initial_state=x["initial_state"])
            close(out, ref, 2e-5, f"output reverse={reverse}")
            close(last, ref_last, 2e-5, f"last state reverse={reverse}")


@pytest.mark.slow
@pytest.mark.parametrize("length", [1, 70])
def test_gradients_at_edge_lengths(length):
    x = make_inputs(batch=1, length=length, initial_state=True)
    compare(x, True, length == 1, last=True, tol=2e-5, tile_len=8, tiles_per_chunk=3)


def test_automatic_split_and_public_backend():
    x = make_inputs(batch=1, length=40)
    args = [x[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
    with torch.no_grad():
        out = selective_scan(*args, True, backend="triton")
        close(out, selective_scan_ref(*args, True), 2e-5, "output")
    cfg = tri._Config(batch=1, dim=2048, groups=1, state=16, length=2**20)
    assert cfg.n_chunks * cfg.K >= cfg.n_tiles > (cfg.n_chunks - 1) * cfg.K
    assert 1 < cfg.n_chunks <= tri.MAX_CHUNKS
    small = tri._Config(batch=8, dim=768, groups=1, state=16, length=100)
    assert small.n_tiles == triton.cdiv(100, small.BT) and small.n_chunks * small.K >= small.n_tiles


def test_empty_sequence_and_bad_shapes():
    x = make_inputs(batch=1, length=0, initial_state=True)
    args = [x[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
    out, last = tri.selective_scan_triton(*args, True, True, initial_state=x["initial_state"])
    assert out.shape == (1, 4, 0) and torch.equal(last, x["initial_state"].float())
    y = make_inputs(dim=6, groups=4, length=3)
    with pytest.raises(ValueError, match="not divisible"):
        tri.selective_scan_triton(*[y[k] for k in ("u", "delta", "A", "B", "C")])
    w = make_inputs(length=3)
    with pytest.raises(ValueError, match="tile_len"):
        tri.selective_scan_triton(*[w[k] for k in ("u", "delta", "A", "B", "C")], tile_len=6)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_backward_with_its_own_channel_block_and_chunking(reverse):
    """The backward may cut channels (and hence chunks) differently from the forward; gradients agree."""
    x = make_inputs(dim=8, length=26, initial_state=True)
    compare(x, True, reverse, last=True, tol=2e-5, tile_len=4, block_d=4, backward_block_d=1, backward_num_warps=4)
    y = make_inputs(dim=8, length=26)
    args = [y[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
    cot = torch.randn(2, 2, 8, 26, generator=torch.Generator().manual_seed(5)).to(DEVICE)
    grads = []
    for opts in (dict(block_d=4), dict(block_d=4, backward_block_d=2, tiles_per_chunk=3)):
        outs = tri.selective_scan_bidirectional_triton(*args, True, tile_len=4, **opts)
        loss = sum((o.float() * c).sum() for o, c in zip(outs, cot))
        grads.append(torch.autograd.grad(loss, args))
    for name, a, b in zip(NAMES, *grads):
        close(a, b, 2e-5, f"bidirectional d{name}")
    with pytest.raises(ValueError, match="backward_block_d"):
        tri.selective_scan_triton(*args, backward_block_d=3)
    with torch.no_grad():  # the public function passes tuning options to this backend
        out = selective_scan(*args, True, backend="triton", tile_len=4, block_d=2)
        close(out, selective_scan_ref(*args, True), 2e-5, "public function with tuning")


def test_inference_saves_no_tile_states(monkeypatch):
    """Under torch.no_grad() (and with no input requiring a gradient) the forward keeps nothing for a
    backward: at 1 Mb the per-tile states would be gigabytes per layer. With gradients they are kept."""
    seen = []
    real = tri._run_forward

    def spy(*args):
        seen.append(args[-2])  # the ``save`` argument
        return real(*args)

    monkeypatch.setattr(tri, "_run_forward", spy)
    x = make_inputs(batch=1, length=12)
    args = [x[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
    with torch.no_grad():
        tri.selective_scan_triton(*args, True, tile_len=4)
        tri.selective_scan_bidirectional_triton(*args, True, tile_len=4)
    tri.selective_scan_triton(*[a.detach() for a in args], True, tile_len=4)
    assert seen == [False, False, False]
    out = tri.selective_scan_triton(*args, True, tile_len=4)
    assert seen[-1] is True
    out.sum().backward()  # the saved states serve the backward
    assert x["u"].grad is not None


@triton.jit
def _offset_probe(out_ptr, b, d, t, D, L, g, n, G, N, k, NK):
    tl.store(out_ptr + 0, tri._seq_offset(b, d, t, D, L))
    tl.store(out_ptr + 1, tri._bc_offset(b, g, n, t, G, N, L))
    tl.store(out_ptr + 2, tri._state_offset(b, k, d, n, NK, D, N))


def test_offsets_are_64_bit():
    """Every factor fits in int32 (as Triton passes it) but the products do not: the helpers that all
    kernels use for addressing must widen before multiplying."""
    b, d, t, D, L = 3, 2047, 2**20 - 1, 2048, 2**20
    g, n, G, N, k, NK = 63, 15, 64, 16, 2**15 - 1, 2**15
    expected = [
        (b * D + d) * L + t,
        ((b * G + g) * N + n) * L + t,
        ((b * NK + k) * D + d) * N + n,
    ]
    assert min(expected) > 2**31
    out = torch.zeros(3, dtype=torch.int64, device=DEVICE)
    _offset_probe[(1,)](out, b, d, t, D, L, g, n, G, N, k, NK)
    assert out.tolist() == expected


# ------------------------------------------------------------------------------------------------
# real sizes on the GPU
# ------------------------------------------------------------------------------------------------


def _gpu_inputs(batch, dim, state, length, dtype, groups=None, seed=0):
    x = make_inputs(batch, dim, state, length, groups=groups, dtype=dtype, initial_state=False, seed=seed)
    return x


@pytest.mark.gpu
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_gpu_forward_matches_reference_dim512_l65536(reverse):
    x = _gpu_inputs(1, 512, 16, 2**16, torch.float32)
    args = [x[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
    with torch.no_grad():
        out, last = tri.selective_scan_triton(*args, True, True, reverse=reverse)
        ref, ref_last = selective_scan_ref(*args, True, True, reverse=reverse)
    close(out, ref, 1e-4, "output")
    close(last, ref_last, 1e-4, "last state")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_gpu_gradients_match_reference(dtype, reverse):
    x = make_inputs(2, 256, 16, 2048, groups=2, dtype=dtype, initial_state=True)
    compare(x, True, reverse, last=True, tol=1e-4 if dtype == torch.float32 else 3e-2)


@pytest.mark.gpu
def test_gpu_bidirectional_and_pieces_at_one_megabase():
    """At L = 2^20: the bidirectional pass equals the two single scans (value and gradient), and
    four pieces with the state carried equal one pass."""
    L = 2**20
    x = make_inputs(1, 64, 16, L, dtype=torch.bfloat16)
    args = [x[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
    out_f, out_r = tri.selective_scan_bidirectional_triton(*args, True)
    cf, cr = torch.randn_like(out_f, dtype=torch.float32), torch.randn_like(out_r, dtype=torch.float32)
    grads = torch.autograd.grad((out_f.float() * cf).sum() + (out_r.float() * cr).sum(), args)
    single_f, last = tri.selective_scan_triton(*args, True, True)
    single_r = tri.selective_scan_triton(*args, True, reverse=True)
    grads_single = torch.autograd.grad((single_f.float() * cf).sum() + (single_r.float() * cr).sum(), args)
    close(out_f, single_f, 1e-2, "forward")
    close(out_r, single_r, 1e-2, "reverse")
    for name, g, gs in zip(NAMES, grads, grads_single):
        close(g, gs, 1e-2, f"d{name}")
    with torch.no_grad():
        state, outs = None, []
        for lo in range(0, L, L // 4):
            piece = [a[..., lo:lo + L // 4] if a is not None and a.dim() == 3 else a for a in args]
            o, state = tri.selective_scan_triton(*piece, True, True, initial_state=state)
            outs.append(o)
    close(torch.cat(outs, -1), single_f, 1e-2, "pieces")
    close(state, last, 1e-3, "last state")
