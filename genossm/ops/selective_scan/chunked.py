"""Block-wise selective scan in plain PyTorch: fast on CPU, O(L) memory, runs on any device.

The recurrence of ``reference.py`` (h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t u_t) is evaluated in blocks of
``block_len`` positions. Inside a block the decays telescope: with S_t = A · Σ_{r≤t} Δ_r (block-relative),

    h_t = exp(S_t) h_0 + Σ_{s≤t} exp(S_t - S_s) Δ_s B_s u_s
        = P_t · (exp(R) h_0 + cumsum_s(Δ_s B_s u_s / P_s)),      P_t = exp(S_t - R),

so a block costs one exp, one cumulative sum and a few multiplies over (batch, dim, state, block) instead of
one small kernel call per position; the state is carried from block to block. R is the middle of the
block's range of S, so |S_t - R| stays within ``_EXP_CAP`` whenever the whole block's decay spans at most
2·``_EXP_CAP`` (e^±60 is far from fp32 overflow even after summing a block of terms). Channels whose decay
spans more inside a block (very large Δ·A) are recomputed there by exact per-position stepping, so the
result never overflows and never silently loses a term.

Backward (a ``torch.autograd.Function``): the forward keeps only the state at each block boundary. The
backward walks the blocks in the opposite order of the scan, recomputes the block's states from its
boundary state, runs the adjoint recurrence λ_t = C_t g_t + exp(Δ_{t+1} A) λ_{t+1} with the same block
trick (a reversed cumulative sum), and reduces the gradients of u, Δ, A, B, C, D, z, delta_bias and the
initial state block by block. Memory: inputs, a few (batch, dim, length) float32 buffers and
(length / block_len) boundary states; never a (batch, dim, state, length) tensor.

Gradients flowing into the returned last state (``return_last_state=True``) are supported.
``reverse=True`` scans each block from its end (only per-block slices of the inputs are flipped, never the
whole tensors). Everything is computed in float32; ``out`` is returned in u's dtype, gradients in the
dtypes of their inputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

BLOCK_LEN = 64
_EXP_CAP = 60.0  # bound on |S_t - R| inside a block: e^60 ≈ 1e26 leaves room for block sums below fp32 max


def _bc_grouped(BC: torch.Tensor) -> torch.Tensor:
    """(batch, state, L) or (batch, groups, state, L) -> float32 (batch, groups, state, L)."""
    return (BC.unsqueeze(1) if BC.dim() == 3 else BC).float()


def _check_shapes(u, delta, A, B, C, D, z, delta_bias, initial_state):
    if u.dim() != 3:
        raise ValueError(f"u must be (batch, dim, length), got shape {tuple(u.shape)}")
    batch, dim, length = u.shape
    if delta.shape != u.shape:
        raise ValueError(f"delta shape {tuple(delta.shape)} differs from u shape {tuple(u.shape)}")
    if A.dim() != 2 or A.shape[0] != dim:
        raise ValueError(f"A must be (dim={dim}, state), got shape {tuple(A.shape)}")
    state = A.shape[1]
    for name, BC in (("B", B), ("C", C)):
        if BC.dim() not in (3, 4) or BC.shape[0] != batch or BC.shape[-2] != state or BC.shape[-1] != length:
            raise ValueError(
                f"{name} must be (batch, state, length) or (batch, groups, state, length) = "
                f"({batch}, [groups,] {state}, {length}), got shape {tuple(BC.shape)}"
            )
        if BC.dim() == 4 and dim % BC.shape[1]:
            raise ValueError(f"dim {dim} is not divisible by the number of {name} groups {BC.shape[1]}")
    if B.dim() != C.dim() or (B.dim() == 4 and B.shape[1] != C.shape[1]):
        raise ValueError(f"B {tuple(B.shape)} and C {tuple(C.shape)} must have the same groups")
    for name, v in (("D", D), ("delta_bias", delta_bias)):
        if v is not None and tuple(v.shape) != (dim,):
            raise ValueError(f"{name} must be (dim={dim},), got shape {tuple(v.shape)}")
    if z is not None and z.shape != u.shape:
        raise ValueError(f"z shape {tuple(z.shape)} differs from u shape {tuple(u.shape)}")
    if initial_state is not None and tuple(initial_state.shape) != (batch, dim, state):
        raise ValueError(f"initial_state must be ({batch}, {dim}, {state}), got {tuple(initial_state.shape)}")


def _delta(delta, delta_bias, delta_softplus):
    """Δ as used by the recurrence, float32, and the pre-softplus value (for its derivative)."""
    pre = delta.float()
    if delta_bias is not None:
        pre = pre + delta_bias.float()[None, :, None]
    return (F.softplus(pre) if delta_softplus else pre), pre


def _hot_channels(dt, A3, block_len):
    """Per block, the channels whose decay spans more than 2·_EXP_CAP: (n_blocks, groups, per_group) bool.

    The span of S over a block is |A| times the range of the block-relative cumulative sum of Δ (including
    the 0 before the first step); it is the same whichever end the scan starts from.
    """
    batch, g, k, length = dt.shape
    n_blocks = -(-length // block_len)
    pad = n_blocks * block_len - length
    cum = F.pad(dt, (0, pad)).view(batch, g, k, n_blocks, block_len).cumsum(-1)
    span = cum.amax(-1).clamp_min(0) - cum.amin(-1).clamp_max(0)  # (batch, g, k, n_blocks)
    span = span.amax(0) * A3.abs().amax(-1, keepdim=True)  # (g, k, n_blocks)
    return (span > 2 * _EXP_CAP).permute(2, 0, 1)


def _block_factors(dt_b, A3, hot):
    """P = exp(S - R) (batch, g, k, state, T) and exp(R) (batch, g, k, state) for one block in scan order."""
    cum = dt_b.cumsum(-1)
    mid = 0.5 * (cum.amax(-1, keepdim=True).clamp_min(0) + cum.amin(-1, keepdim=True).clamp_max(0))
    X = (cum - mid).unsqueeze(-2) * A3.unsqueeze(-1)
    if hot is not None:
        X.masked_fill_(hot[:, :, None, None], 0.0)  # finite placeholders; those channels are stepped exactly
    return X.exp_(), torch.exp(A3 * mid)


def _step_states(dt, du, Bk, h, A):
    """Exact per-position stepping for a few channels: dt, du (b, c, T); Bk (b, c, n, T); h (b, c, n)."""
    T = dt.shape[-1]
    H = dt.new_empty(*h.shape, T)
    for t in range(T):
        h = torch.exp(dt[..., t, None] * A) * h + Bk[..., t] * du[..., t, None]
        H[..., t] = h
    return H


def _step_adjoint(dt, Cg, mu, A):
    """λ_t = C_t g_t + exp(Δ_{t+1} A) λ_{t+1} stepped back from λ_{T-1} = C g + μ; Cg (b, c, n, T)."""
    T = dt.shape[-1]
    lam = Cg.new_empty(Cg.shape)
    acc = mu
    for t in range(T - 1, -1, -1):
        acc = Cg[..., t] + acc
        lam[..., t] = acc
        acc = torch.exp(dt[..., t, None] * A) * acc
    return lam


def _block_states(dt_b, du_b, B_b, h0, A3, hot):
    """States h_t of one block, scan order: (batch, g, k, state, T); also P, exp(R), Δ B u."""
    P, eR = _block_factors(dt_b, A3, hot)
    Bdu = B_b.unsqueeze(2) * du_b.unsqueeze(-2)
    H = (Bdu / P).cumsum_(-1)
    H += (eR * h0).unsqueeze(-1)
    H *= P
    if hot is not None:
        gi = hot.nonzero()[:, 0]
        H[:, hot] = _step_states(dt_b[:, hot], du_b[:, hot], B_b[:, gi], h0[:, hot], A3[hot])
    return H, P, Bdu


def _flip(x, reverse):
    return x.flip(-1) if reverse else x


def _prepare(u, delta, A, B, C, delta_bias, delta_softplus):
    """What forward and backward both derive from the inputs, float32, channels split as (groups, per group).

    Returns B4, C4 (batch, g, state, L); g; k = dim // g; Δ and its pre-softplus value (batch, dim, L); u as
    float32; Δ and Δ·u viewed as (batch, g, k, L); A as (g, k, state)."""
    batch, dim, length = u.shape
    B4, C4 = _bc_grouped(B), _bc_grouped(C)
    g = B4.shape[1]
    k = dim // g
    dt, pre = _delta(delta, delta_bias, delta_softplus)
    uf = u.float()
    dt5 = dt.view(batch, g, k, length)
    du5 = (dt * uf).view(batch, g, k, length)
    A3 = A.float().view(g, k, A.shape[1])
    return B4, C4, g, k, dt, pre, uf, dt5, du5, A3


class _ChunkedScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus, reverse, block_len):
        batch, dim, length = u.shape
        state = A.shape[1]
        B4, C4, g, k, dt, _, uf, dt5, du5, A3 = _prepare(u, delta, A, B, C, delta_bias, delta_softplus)
        if initial_state is None:
            h = uf.new_zeros(batch, g, k, state)
        else:
            h = initial_state.float().reshape(batch, g, k, state)
        n_blocks = -(-length // block_len)
        save = any(ctx.needs_input_grad)
        starts = uf.new_empty(n_blocks, batch, g, k, state) if save else None
        hot_blocks = _hot_channels(dt5, A3, block_len) if n_blocks else None
        any_hot = hot_blocks.flatten(1).any(1).tolist() if n_blocks else []
        y = uf.new_empty(batch, g, k, length)
        for j in range(n_blocks - 1, -1, -1) if reverse else range(n_blocks):
            s = slice(j * block_len, min(length, (j + 1) * block_len))
            hot = hot_blocks[j] if any_hot[j] else None
            dt_b, du_b = _flip(dt5[..., s], reverse), _flip(du5[..., s], reverse)
            B_b, C_b = _flip(B4[..., s], reverse), _flip(C4[..., s], reverse)
            if save:
                starts[j] = h
            H, _, _ = _block_states(dt_b, du_b, B_b, h, A3, hot)
            h = H[..., -1].clone()
            y[..., s] = _flip(H.mul_(C_b.unsqueeze(2)).sum(-2), reverse)
        y = y.view(batch, dim, length)
        if D is not None:
            y.addcmul_(D.float()[None, :, None], uf)
        out = y if z is None else y * F.silu(z.float())
        last = h.reshape(batch, dim, state)
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
        B4, C4, g, k, dt, pre, uf, dt5, du5, A3 = _prepare(u, delta, A, B, C, delta_bias, delta_softplus)
        g_out = g_out.float() if g_out is not None else uf.new_zeros(batch, dim, length)
        gy = g_out if z is None else g_out * F.silu(z.float())  # gradient of y + D u
        gy5 = gy.view(batch, g, k, length)
        g_du = uf.new_empty(batch, g, k, length)
        g_dtA = uf.new_empty(batch, g, k, length)
        g_B4 = uf.new_empty(B4.shape)
        g_C4 = uf.new_empty(C4.shape)
        g_A3 = uf.new_zeros(g, k, state)
        mu = uf.new_zeros(batch, g, k, state) if g_last is None else g_last.float().reshape(batch, g, k, state)
        n_blocks = starts.shape[0]
        hot_blocks = _hot_channels(dt5, A3, block_len) if n_blocks else None
        any_hot = hot_blocks.flatten(1).any(1).tolist() if n_blocks else []
        for j in range(n_blocks) if reverse else range(n_blocks - 1, -1, -1):
            s = slice(j * block_len, min(length, (j + 1) * block_len))
            hot = hot_blocks[j] if any_hot[j] else None
            dt_b, du_b = _flip(dt5[..., s], reverse), _flip(du5[..., s], reverse)
            B_b, C_b = _flip(B4[..., s], reverse), _flip(C4[..., s], reverse)
            gy_b = _flip(gy5[..., s], reverse)
            H, P, Bdu = _block_states(dt_b, du_b, B_b, starts[j], A3, hot)
            # λ_t = (Σ_{s≥t} P_s C_s g_s + P_last μ) / P_t : a reversed cumulative sum inside the block
            G = C_b.unsqueeze(2) * gy_b.unsqueeze(-2)  # (batch, g, k, state, T)
            Cg_hot = G[:, hot] if hot is not None else None
            G *= P
            G[..., -1] += P[..., -1] * mu
            lam = G.flip(-1).cumsum_(-1).flip(-1).div_(P)
            if hot is not None:
                lam[:, hot] = _step_adjoint(dt_b[:, hot], Cg_hot, mu[:, hot], A3[hot])
            mu = torch.exp(dt_b[..., :1] * A3) * lam[..., 0]  # adjoint of the state before the block
            g_C4[..., s] = _flip((H * gy_b.unsqueeze(-2)).sum(2), reverse)
            g_B4[..., s] = _flip((lam * du_b.unsqueeze(-2)).sum(2), reverse)
            g_du[..., s] = _flip((lam * B_b.unsqueeze(2)).sum(-2), reverse)
            K = lam.mul_(H.sub_(Bdu))  # λ_t · exp(Δ_t A) h_{t-1}
            g_dtA[..., s] = _flip((K * A3.unsqueeze(-1)).sum(-2), reverse)
            g_A3 += (K * dt_b.unsqueeze(-2)).sum((0, -1))
        # finish in place: these (batch, dim, length) buffers dominate the backward's memory at long L
        g_du = g_du.view(batch, dim, length)
        g_dt = g_dtA.view(batch, dim, length).addcmul_(g_du, uf)
        g_u = g_du.mul_(dt)
        del dt, du5, dt5
        grads = [None] * 12
        if D is not None:
            g_u.addcmul_(gy, D.float()[None, :, None])
            grads[5] = (gy * uf).sum((0, 2)).to(D.dtype)
        del gy, gy5
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
        grads[2] = g_A3.view(dim, state).to(A.dtype)
        grads[3] = (g_B4 if B.dim() == 4 else g_B4.squeeze(1)).to(B.dtype)
        grads[4] = (g_C4 if C.dim() == 4 else g_C4.squeeze(1)).to(C.dtype)
        if delta_bias is not None:
            grads[7] = g_dt.sum((0, 2)).to(delta_bias.dtype)
        if initial_state is not None:
            grads[8] = mu.reshape(batch, dim, state).to(initial_state.dtype)
        return tuple(grads)


def selective_scan_chunked(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, return_last_state=False,
    *, reverse=False, initial_state=None, block_len=BLOCK_LEN,
):
    """Same arguments and results as :func:`~genossm.ops.selective_scan.reference.selective_scan_ref`.

    ``block_len`` positions are processed per step of the Python loop (64 measured best on CPU; any
    length works, including lengths that are not a multiple of it).
    """
    _check_shapes(u, delta, A, B, C, D, z, delta_bias, initial_state)
    if block_len < 1:
        raise ValueError(f"block_len must be positive, got {block_len}")
    out, last = _ChunkedScan.apply(
        u, delta, A, B, C, D, z, delta_bias, initial_state, bool(delta_softplus), bool(reverse), int(block_len)
    )
    return (out, last) if return_last_state else out


__all__ = ["selective_scan_chunked", "BLOCK_LEN"]
