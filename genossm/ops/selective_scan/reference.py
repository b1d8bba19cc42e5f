"""The selective scan written as the plain sequential recurrence: the specification.

Every other backend is tested against this file, value and gradient. It is slow (one Python step per
position) and keeps every step in the autograd graph, so use it on short sequences only.

For channel d, state n and position t (float32 throughout):

    Δ_t   = softplus(delta_t + delta_bias)      if delta_softplus else delta_t + delta_bias
    h_t   = exp(Δ_t A[d, n]) h_{t-1} + Δ_t B_t[n] u_t
    y_t   = Σ_n C_t[n] h_t[n] + D[d] u_t
    out_t = y_t · silu(z_t)                     if z is given

With ``reverse=True`` the same recurrence runs from t = L-1 down to 0 (h_{t+1} feeds h_t).
B and C are (batch, state, length), or (batch, groups, state, length) where channel d reads group
d // (dim // groups). ``initial_state`` is h before the first step taken; the returned last state is h
after the last step taken (position L-1 forwards, position 0 in reverse).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def expand_groups(BC: torch.Tensor, dim: int) -> torch.Tensor:
    """(batch, state, L) or (batch, groups, state, L) -> (batch, dim, state, L) float32."""
    if BC.dim() == 3:
        return BC.float().unsqueeze(1).expand(-1, dim, -1, -1)
    groups = BC.shape[1]
    if dim % groups:
        raise ValueError(f"dim {dim} is not divisible by the number of B/C groups {groups}")
    return BC.float().repeat_interleave(dim // groups, dim=1)


def selective_scan_ref(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, return_last_state=False,
    *, reverse=False, initial_state=None,
):
    dtype_in = u.dtype
    batch, dim, length = u.shape
    u = u.float()
    delta = delta.float()
    if delta_bias is not None:
        delta = delta + delta_bias.float()[None, :, None]
    if delta_softplus:
        delta = F.softplus(delta)
    Bx = expand_groups(B, dim)  # (batch, dim, state, L)
    Cx = expand_groups(C, dim)
    A = A.float()
    if initial_state is None:
        h = u.new_zeros(batch, dim, A.shape[1])
    else:
        h = initial_state.float()
    ys = [None] * length
    steps = range(length - 1, -1, -1) if reverse else range(length)
    for t in steps:
        dt = delta[:, :, t, None]  # (batch, dim, 1)
        h = torch.exp(dt * A) * h + dt * Bx[..., t] * u[:, :, t, None]
        ys[t] = (h * Cx[..., t]).sum(-1)
    y = torch.stack(ys, dim=-1) if length else u.new_zeros(batch, dim, 0)
    out = y if D is None else y + D.float()[None, :, None] * u
    if z is not None:
        out = out * F.silu(z.float())
    out = out.to(dtype_in)
    return (out, h) if return_last_state else out
