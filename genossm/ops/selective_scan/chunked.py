"""Block-wise selective scan in plain PyTorch: fast on CPU, O(L) memory, runs on any device.

The recurrence of ``reference.py``, h_t = α_t h_{t-1} + x_t with α_t = exp(Δ_t A) and x_t = Δ_t B_t u_t, is
evaluated in blocks of ``block_len`` positions (64 to 256 by default, see ``auto_block_len``), the state
carried from block to block. Inside a block the linear recurrence is solved by a 4-ary tree scan over the
positions (``_tree_scan``): every group of four positions is scanned in three vectorised steps, the group
ends form a four-times shorter recurrence that is solved the same way, and the result is pushed back into
the groups with one multiply-add. Every step is a multiply-add over (batch, dim, state) slices of the
block; only products of the decays α appear, never quotients or exponentials of sums, so nothing can
overflow that the sequential recurrence would not, and a channel with huge decays (Δ·|A| in the hundreds)
takes exactly the same path at the same speed as any other. Exponents below -87 are raised to -87: a decay
that small removes the state either way, and exp is slow on subnormal results. Block buffers are
position-major, (T, batch, groups, state, per_group), so each step reads and writes contiguous rows; the
inputs are transposed to (L, batch, ...) once per call. (On CPU the default backend is the fused C loop of
``cpu.py``; this one is the fallback without a C compiler, and the scan on devices without Triton.)

Backward (a ``torch.autograd.Function``): the forward keeps only the state at each block boundary. The
backward walks the blocks in the opposite order of the scan, recomputes the block's states from its
boundary state, solves the adjoint recurrence λ_t = C_t g_t + α_{t+1} λ_{t+1} with the same tree scan run
the other way, and reduces the gradients of u, Δ, A, B, C, D, z, delta_bias and the initial state block by
block. Memory: inputs, a few (batch, dim, length) float32 buffers, (length / block_len) boundary states and a
few (block_len, batch, dim, state) work buffers allocated once per call; never a (batch, dim, state, length)
tensor.

Gradients flowing into the returned last state (``return_last_state=True``) are supported.
``reverse=True`` scans the blocks from the end and each block from its end, without flipping any tensor.
Everything is computed in float32; ``out`` is returned in u's dtype, gradients in the dtypes of their inputs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from genossm.ops.selective_scan._checks import check_shapes

BLOCK_LEN = 64  # the shortest block chosen automatically
_MAX_BLOCK_LEN = 256
_BLOCK_ELEMENTS = 2**19  # block buffers of about 2 MiB: measured best on CPU for 64 to 1024 channels


def auto_block_len(batch: int, dim: int, state: int) -> int:
    """Block length used when none is given: the power of two whose (block, batch, dim, state) float32 buffers
    hold about ``_BLOCK_ELEMENTS`` values, within [BLOCK_LEN, 256]. Long blocks mean fewer Python steps,
    short ones keep the block's buffers in cache."""
    fit = max(1, _BLOCK_ELEMENTS // max(1, batch * dim * state))
    return min(_MAX_BLOCK_LEN, max(BLOCK_LEN, 1 << (fit.bit_length() - 1)))


def _bc_grouped(BC: torch.Tensor) -> torch.Tensor:
    """(batch, state, L) or (batch, groups, state, L) -> float32 (batch, groups, state, L)."""
    return (BC.unsqueeze(1) if BC.dim() == 3 else BC).float()


def _delta(delta, delta_bias, delta_softplus):
    """Δ as used by the recurrence, float32, and the pre-softplus value (for its derivative)."""
    pre = delta.float()
    if delta_bias is not None:
        pre = pre + delta_bias.float()[None, :, None]
    return (F.softplus(pre) if delta_softplus else pre), pre


def _tree_scan(al, x, h0, reverse=False):
    """Every state of h_t = al_t h_{t-1} + x_t (``reverse``: h_t = al_t h_{t+1} + x_t) along dim 0, in place.

    al, x (T, ...) and h0 (...) float32, h0 the state before the first step taken. x is overwritten with the
    states and returned; al is overwritten with running products of the decays. Groups of four positions are
    scanned in three steps, their end states by recursion on a four-times shorter sequence, then each group
    receives its incoming state with one multiply-add; four positions or fewer, and a remainder of fewer than
    four, are stepped.
    """
    T = x.shape[0]
    m = T // 4
    if T <= 4:
        prev = h0
        for t in range(T - 1, -1, -1) if reverse else range(T):
            x[t].addcmul_(al[t], prev)
            prev = x[t]
        return x
    rem = T - 4 * m
    head = slice(rem, T) if reverse else slice(0, 4 * m)  # the part scanned first, a multiple of four
    al4, x4 = al[head].unflatten(0, (m, 4)), x[head].unflatten(0, (m, 4))
    for i in (2, 1, 0) if reverse else (1, 2, 3):
        j = i + 1 if reverse else i - 1
        x4[:, i].addcmul_(al4[:, i], x4[:, j])  # state inside the group, from a zero start
        al4[:, i].mul_(al4[:, j])  # decay from the group's start to position i
    ends = _tree_scan(al4[:, 0 if reverse else 3], x4[:, 0 if reverse else 3], h0, reverse)
    if reverse:  # the state entering each group: the next group's first state, h0 for the last group
        incoming = torch.cat([ends[1:], h0.unsqueeze(0)])
        x4[:, 1:].addcmul_(al4[:, 1:], incoming.unsqueeze(1))
    else:
        incoming = torch.cat([h0.unsqueeze(0), ends[:-1]])
        x4[:, :3].addcmul_(al4[:, :3], incoming.unsqueeze(1))
    if rem:
        rest = slice(0, rem) if reverse else slice(4 * m, T)
        _tree_scan(al[rest], x[rest], x[rem] if reverse else x[4 * m - 1], reverse)
    return x


def _prepare(u, delta, A, B, C, delta_bias, delta_softplus):
    """What forward and backward both derive from the inputs, float32, channels split as (groups, per group).

    Returns B4 (batch, g, state, L); g; k = dim // g; Δ and its pre-softplus value (batch, dim, L); u as
    float32; Δ and Δ·u position-major (L, batch, g, k); B and C position-major (L, batch, g, state); A as
    (g, state, k)."""
    batch, dim, length = u.shape
    B4, C4 = _bc_grouped(B), _bc_grouped(C)
    g = B4.shape[1]
    k = dim // g
    dt, pre = _delta(delta, delta_bias, delta_softplus)
    uf = u.float()
    dtP = _to_pm(dt).view(length, batch, g, k)
    duP = _to_pm(dt * uf).view(length, batch, g, k)
    An = A.float().view(g, k, A.shape[1]).transpose(-1, -2).contiguous()
    return B4, g, k, dt, pre, uf, dtP, duP, _to_pm(B4), _to_pm(C4), An


def _to_pm(x):
    """(batch, ..., L) float32 -> contiguous position-major (L, batch, ...).

    For any batch this is the transpose of the 2-D (batch·..., L) matrix, which PyTorch copies tile by tile:
    several times faster than the general copy of ``movedim``."""
    shape = x.shape
    return x.reshape(math.prod(shape[:-1]), shape[-1]).t().contiguous().view(shape[-1], *shape[:-1])


def _from_pm(x):
    """(L, batch, ...) -> contiguous (batch, ..., L), as a 2-D transpose too."""
    shape = x.shape
    return x.reshape(shape[0], math.prod(shape[1:])).t().contiguous().view(*shape[1:], shape[0])


_LOG_TINY = -87.0  # exp(-87) ≈ 1.6e-38, the smallest normal float32 magnitude: smaller decays are clamped here


def _decays(dt_b, An, out, clamp):
    """α = exp(Δ A) for one block, (T, batch, g, state, k). With ``clamp``, exponents below _LOG_TINY are raised
    to it: such a decay multiplies the state by less than 1e-37 either way, and exp is far slower on arguments
    whose result is subnormal or zero."""
    X = torch.mul(dt_b.unsqueeze(3), An, out=out)
    return (X.clamp_min_(_LOG_TINY) if clamp else X).exp_()


def _needs_clamp(dt, An):
    """Whether some Δ·A can fall below _LOG_TINY (one pass over Δ; most inputs never come near it)."""
    if dt.numel() == 0:
        return False
    low, high = torch.aminmax(dt)
    return bool(torch.maximum(low.abs(), high.abs()) * An.abs().max() > -_LOG_TINY)


def _blocks(length, block_len, reverse):
    n_blocks = -(-length // block_len)
    order = range(n_blocks - 1, -1, -1) if reverse else range(n_blocks)
    return [(j, slice(j * block_len, min(length, (j + 1) * block_len))) for j in order]


def _to_nk(h, batch, g, k, state):
    """(batch, dim, state) -> (batch, g, state, k) float32 contiguous: the layout of the block buffers."""
    return h.float().reshape(batch, g, k, state).transpose(-1, -2).contiguous()


def _from_nk(h, batch, dim, state):
    return h.transpose(-1, -2).reshape(batch, dim, state)


# Block buffers are (T, batch, groups, state, per_group): position-major so that the tree scan's steps are
# contiguous rows, channels innermost so that sums over the state are sums of rows and C·h is a matmul.
class _ChunkedScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus, reverse, block_len, save):
        # ``save`` comes from the caller: inside forward() grad mode is always off and needs_input_grad
        # stays True under torch.no_grad(), so neither can tell inference from training here.
        batch, dim, length = u.shape
        state = A.shape[1]
        _, g, k, dt, _, uf, dtP, duP, BP, CP, An = _prepare(u, delta, A, B, C, delta_bias, delta_softplus)
        clamp = _needs_clamp(dt, An)
        del dt
        if initial_state is None:
            h = uf.new_zeros(batch, g, state, k)
        else:
            h = _to_nk(initial_state, batch, g, k, state)
        blocks = _blocks(length, block_len, reverse)
        starts = uf.new_empty(len(blocks), batch, g, state, k) if save else None
        T_max = min(block_len, length)
        w_al = uf.new_empty(T_max, batch, g, state, k)  # work buffers, reused by every block
        w_x = uf.new_empty(T_max, batch, g, state, k)
        yP = uf.new_empty(length, batch, g, k)
        for j, s in blocks:
            T = s.stop - s.start
            if save:
                starts[j] = h
            al = _decays(dtP[s], An, w_al[:T], clamp)
            H = torch.mul(BP[s].unsqueeze(-1), duP[s].unsqueeze(3), out=w_x[:T])
            _tree_scan(al, H, h, reverse)
            h = H[0 if reverse else T - 1].clone()
            torch.matmul(CP[s].unsqueeze(3), H, out=yP[s].unsqueeze(3))  # Σ_n C_n h_n
        del dtP, duP, BP, CP
        y = _from_pm(yP).view(batch, dim, length)
        del yP
        if D is not None:
            y.addcmul_(D.float()[None, :, None], uf)
        out = y if z is None else y * F.silu(z.float())
        last = _from_nk(h, batch, dim, state)
        if save:
            # the ungated output, for the gradient of z: one (batch, dim, length) tensor in u's dtype
            y_saved = y.to(u.dtype) if z is not None else None
            ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, initial_state, starts, y_saved)
            ctx.config = (delta_softplus, reverse, block_len)
        return out.to(u.dtype), last

    @staticmethod
    def backward(ctx, g_out, g_last):
        u, delta, A, B, C, D, z, delta_bias, initial_state, starts, y_saved = ctx.saved_tensors
        delta_softplus, reverse, block_len = ctx.config
        batch, dim, length = u.shape
        state = A.shape[1]
        B4, g, k, dt, pre, uf, dtP, duP, BP, CP, An = _prepare(u, delta, A, B, C, delta_bias, delta_softplus)
        clamp = _needs_clamp(dt, An)
        g_out = g_out.float() if g_out is not None else uf.new_zeros(batch, dim, length)
        gy = g_out if z is None else g_out * F.silu(z.float())  # gradient of y + D u
        gyP = _to_pm(gy).view(length, batch, g, k)
        g_duP = uf.new_empty(length, batch, g, k)
        g_dtAP = uf.new_empty(length, batch, g, k)
        g_BP = uf.new_empty(length, batch, g, state)
        g_CP = uf.new_empty(length, batch, g, state)
        g_An = uf.new_zeros(g, state, k)
        mu = uf.new_zeros(batch, g, state, k) if g_last is None else _to_nk(g_last, batch, g, k, state)
        T_max = min(block_len, length)
        w_al, w_bl, w_H, w_lam = (uf.new_empty(T_max, batch, g, state, k) for _ in range(4))
        first, last = (-1, 0) if reverse else (0, -1)  # a block's first and last position in scan order
        for j, s in reversed(_blocks(length, block_len, reverse)):
            T = s.stop - s.start
            dt_b, gy_b, du_b = dtP[s].unsqueeze(3), gyP[s].unsqueeze(3), duP[s].unsqueeze(3)
            al = _decays(dtP[s], An, w_al[:T], clamp)
            bl, scratch = w_bl[:T], w_bl[:T]
            H = torch.mul(BP[s].unsqueeze(-1), du_b, out=w_H[:T])
            _tree_scan(bl.copy_(al), H, starts[j], reverse)
            # adjoint: λ_t = C_t g_t + α_{t+1} λ_{t+1} in scan order, a scan the other way with shifted decays
            bl[last] = 1.0
            (bl[1:] if reverse else bl[:-1]).copy_(al[:-1] if reverse else al[1:])
            lam = torch.mul(CP[s].unsqueeze(-1), gy_b, out=w_lam[:T])
            _tree_scan(bl, lam, mu, not reverse)
            mu = al[first] * lam[first]  # adjoint of the state before the block
            torch.sum(torch.mul(H, gy_b, out=scratch), -1, out=g_CP[s])
            torch.sum(torch.mul(lam, du_b, out=scratch), -1, out=g_BP[s])
            torch.matmul(BP[s].unsqueeze(3), lam, out=g_duP[s].unsqueeze(3))  # Σ_n B_n λ_n
            K = lam.mul_(al)  # λ_t α_t h_{t-1}: the previous state in scan order, the block's start state first
            (K[:-1] if reverse else K[1:]).mul_(H[1:] if reverse else H[:-1])
            K[first].mul_(starts[j])
            torch.sum(torch.mul(K, An, out=scratch), 3, out=g_dtAP[s])
            g_An += torch.mul(K, dt_b, out=scratch).sum((0, 1))
        del dtP, duP, BP, CP, gyP, w_al, w_bl, w_H, w_lam
        g_A3 = g_An.transpose(-1, -2)
        mu = _from_nk(mu, batch, dim, state)
        g_B4, g_C4 = _from_pm(g_BP), _from_pm(g_CP)
        g_du = _from_pm(g_duP)
        del g_duP
        g_dtA = _from_pm(g_dtAP)
        del g_dtAP
        # finish in place: these (batch, dim, length) buffers dominate the backward's memory at long L
        g_du = g_du.view(batch, dim, length)
        g_dt = g_dtA.view(batch, dim, length).addcmul_(g_du, uf)
        g_u = g_du.mul_(dt)
        del dt
        grads = [None] * 13
        if D is not None:
            g_u.addcmul_(gy, D.float()[None, :, None])
            grads[5] = (gy * uf).sum((0, 2)).to(D.dtype)
        del gy
        if z is not None and ctx.needs_input_grad[6]:
            zf = z.float()
            sig = torch.sigmoid(zf)
            dsilu = (1 - sig).mul_(zf).add_(1).mul_(sig)  # d silu(z) / dz
            del sig
            grads[6] = dsilu.mul_(g_out).mul_(y_saved).to(z.dtype)
            del dsilu
        if delta_softplus:
            g_dt.mul_(torch.sigmoid(pre))  # not in place: pre can be the caller's delta
        grads[0] = g_u.to(u.dtype)
        grads[1] = g_dt.to(delta.dtype)
        grads[2] = g_A3.reshape(dim, state).to(A.dtype)
        grads[3] = (g_B4 if B.dim() == 4 else g_B4.squeeze(1)).to(B.dtype)
        grads[4] = (g_C4 if C.dim() == 4 else g_C4.squeeze(1)).to(C.dtype)
        if delta_bias is not None:
            grads[7] = g_dt.sum((0, 2)).to(delta_bias.dtype)
        if initial_state is not None:
            grads[8] = mu.to(initial_state.dtype)
        return tuple(grads)


def selective_scan_chunked(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, return_last_state=False,
    *, reverse=False, initial_state=None, block_len=None,
):
    """Same arguments and results as :func:`~genossm.ops.selective_scan.reference.selective_scan_ref`.

    ``block_len`` positions are processed per step of the Python loop; by default :func:`auto_block_len`
    (64 to 256 depending on batch × dim × state). Any length works, including lengths that are not a
    multiple of it.
    """
    check_shapes(u, delta, A, B, C, D, z, delta_bias, initial_state)
    if block_len is None:
        block_len = auto_block_len(u.shape[0], u.shape[1], A.shape[1])
    if block_len < 1:
        raise ValueError(f"block_len must be positive, got {block_len}")
    # inference (torch.no_grad, or no input needing a gradient) keeps no block-boundary states
    save = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (u, delta, A, B, C, D, z, delta_bias, initial_state)
    )
    out, last = _ChunkedScan.apply(
        u, delta, A, B, C, D, z, delta_bias, initial_state, bool(delta_softplus), bool(reverse), int(block_len), save
    )
    return (out, last) if return_last_state else out


__all__ = ["selective_scan_chunked", "auto_block_len", "BLOCK_LEN"]
