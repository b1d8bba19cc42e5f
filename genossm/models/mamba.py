"""The Mamba block in plain PyTorch: one selective-SSM branch, the causal mixer, the pre-norm residual block.

A Mamba mixer maps hidden states (batch, L, d_model) to (batch, L, d_model):

    x, z   = in_proj(h)                       two (batch, d_inner, L) streams, d_inner = expand * d_model
    u      = silu(depthwise_conv1d(x))        short local context (kernel d_conv)
    Δ, B, C = x_proj(u)                       Δ low rank (dt_rank), B and C (batch, d_state, L)
    Δ      = dt_proj(Δ)                       (batch, d_inner, L); bias and softplus applied inside the scan
    y      = selective_scan(u, Δ, A, B, C, D, z)   gated by silu(z) inside the scan
    out    = out_proj(y)

Initialisation follows Mamba: the Δ bias is the inverse softplus of a log-uniform sample in
[dt_min, dt_max], A = -exp(A_log) with A_log = log(1..d_state) for every channel, D = 1.

:class:`SSMBranch` holds everything of one scan direction except the output projection, so the
bidirectional mixer (``bimamba.py``) can use one branch for both directions (tied) or one per direction.
Its convolution runs in three modes from one weight ``w`` of shape (d_inner, 1, d_conv):

    causal      y_t = Σ_k w_k x_{t-(K-1-k)}            (forward scan; pad K-1 on the left)
    anticausal  y_t = Σ_k w_k x_{t+(K-1-k)}            (reverse scan; the mirror image, pad on the right)
    symmetric   causal taps plus their mirror images    (one conv shared by both directions)

so the reverse direction never needs a flipped copy of the sequence.

**Position-major path (CPU).** When the scan backend is the fused CPU kernel (``backend="cpu"``, the
default on CPU), the branch keeps every tensor as (batch, L, channels), the layout the projections
produce and the kernel scans in: x and z are views of in_proj's output, the depthwise conv is a sum
of shifted rows, Δ, B and C come straight from x_proj/dt_proj, and the gated, skip-added output of both
directions goes straight into out_proj. No transpose anywhere; the numbers are those of the
(batch, channels, L) path to float rounding. Other backends (Triton on GPU, chunked, reference) take
the (batch, channels, L) path of ``selective_scan``'s contract.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from genossm.ops.selective_scan import resolve_backend, selective_scan, selective_scan_bidirectional

CONV_MODES = ("causal", "anticausal", "symmetric")


@functools.lru_cache(maxsize=1)
def cpu_bf16_supported() -> bool:
    """Whether this CPU multiplies bfloat16 matrices natively (x86 AMX-BF16 or AVX512-BF16, Arm BF16), so
    that ``torch.autocast("cpu", torch.bfloat16)`` speeds a model up. Elsewhere oneDNN emulates bf16 and
    autocast only costs conversions. The scan state stays float32 under autocast either way."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"amx_bf16", "avx512_bf16", "bf16"})
    except OSError:
        pass
    return False


def inverse_softplus(x: torch.Tensor) -> torch.Tensor:
    return x + torch.log(-torch.expm1(-x))


class SSMBranch(nn.Module):
    """in_proj + depthwise conv + x/Δ projections + SSM parameters (A_log, D, Δ bias): one scan direction."""

    def __init__(self, d_model, d_inner, d_state, d_conv, dt_rank, dt_min=1e-3, dt_max=0.1, dt_init_floor=1e-4,
                 in_proj: nn.Linear | None = None):
        super().__init__()
        self.d_inner, self.d_state, self.d_conv, self.dt_rank = d_inner, d_state, d_conv, dt_rank
        if in_proj is None:
            self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)
        else:
            # another branch's in_proj, shared (Caduceus' bidirectional weight tie): kept as a plain attribute
            # so that its weight is a parameter (and a state-dict entry) of the owning branch only
            object.__setattr__(self, "in_proj", in_proj)
        self.conv = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, bias=True)  # called through F.conv1d
        self.x_proj = nn.Linear(d_inner, dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, d_inner, bias=False)

        nn.init.uniform_(self.dt_proj.weight, -(dt_rank**-0.5), dt_rank**-0.5)
        dt = torch.exp(torch.rand(d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        self.dt_bias = nn.Parameter(inverse_softplus(dt.clamp(min=dt_init_floor)))
        A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(d_inner, 1)  # (d_inner, d_state)
        self.A_log = nn.Parameter(torch.log(A))
        self.D = nn.Parameter(torch.ones(d_inner))

    # ---- pieces -------------------------------------------------------------------------------------
    def project_in(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch, L, d_model) -> x, z each (batch, d_inner, L)."""
        x, z = self.in_proj(h).transpose(1, 2).chunk(2, dim=1)
        return x, z

    def conv_taps(self, mode: str) -> tuple[torch.Tensor, int, int]:
        """The depthwise kernel for ``mode`` and how many positions it reads (left, right) of t."""
        w, k = self.conv.weight, self.d_conv  # (d_inner, 1, K)
        if mode == "causal":
            return w, k - 1, 0
        if mode == "anticausal":
            return w.flip(-1), 0, k - 1
        if mode == "symmetric":
            return torch.cat([w, w[..., :-1].flip(-1)], dim=-1), k - 1, k - 1
        raise ValueError(f"unknown conv mode {mode!r}; choose one of {CONV_MODES}")

    def conv_act(self, x: torch.Tensor, mode: str, padded: bool = False) -> torch.Tensor:
        """silu(conv(x)). ``padded=True``: x already carries its left/right context (chunked inference)."""
        w, left, right = self.conv_taps(mode)
        if not padded:
            x = F.pad(x, (left, right))
        return F.silu(F.conv1d(x, w, self.conv.bias, groups=self.d_inner))  # (batch, d_inner, L)

    def ssm_inputs(self, u: torch.Tensor):
        """u (batch, d_inner, L) -> Δ (batch, d_inner, L), B, C (batch, d_state, L)."""
        x_dbl = self.x_proj(u.transpose(1, 2))  # (batch, L, dt_rank + 2 d_state)
        dt, B, C = x_dbl.split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = self.dt_proj(dt).transpose(1, 2)
        return delta, B.transpose(1, 2).contiguous(), C.transpose(1, 2).contiguous()

    def A(self) -> torch.Tensor:
        return -torch.exp(self.A_log.float())  # (d_inner, d_state)

    # ---- scans --------------------------------------------------------------------------------------
    def scan(self, u, z, *, reverse=False, initial_state=None, return_last_state=False, backend="auto"):
        """Gated selective scan of u (batch, d_inner, L) -> y (batch, d_inner, L) [, last state]."""
        delta, B, C = self.ssm_inputs(u)
        return selective_scan(
            u, delta.contiguous(), self.A(), B, C, self.D.float(), z.contiguous(), self.dt_bias.float(), True,
            return_last_state, reverse=reverse, initial_state=initial_state, backend=backend,
        )

    def scan_bidirectional(self, u, z, *, backend="auto"):
        """Forward and reverse scans of the same (u, Δ, B, C, z) -> (y_forward, y_reverse)."""
        delta, B, C = self.ssm_inputs(u)
        return selective_scan_bidirectional(
            u, delta.contiguous(), self.A(), B, C, self.D.float(), z.contiguous(), self.dt_bias.float(), True,
            backend=backend,
        )

    def run(self, h: torch.Tensor, conv_mode: str, reverse: bool, backend: str = "auto", xz=None) -> torch.Tensor:
        """(batch, L, d_model) -> gated y (batch, d_inner, L) for one direction. ``xz``: ``project_in(h)``
        already computed (by a branch sharing this one's in_proj)."""
        x, z = self.project_in(h) if xz is None else xz
        return self.scan(self.conv_act(x, conv_mode), z, reverse=reverse, backend=backend)

    # ---- position-major path (the fused CPU scan) -----------------------------------------------------
    def position_major(self, h: torch.Tensor, backend: str) -> bool:
        """Whether ``backend`` on h's device is the fused CPU scan, which takes (batch, L, channels) tensors."""
        return resolve_backend(backend, h, self.d_state) == "cpu"

    def conv_act_pm(self, x: torch.Tensor, mode: str) -> torch.Tensor:
        """silu(conv(x)) for x (batch, L, d_inner), in one pass of the fused CPU kernel."""
        from genossm.ops.selective_scan.cpu import conv_silu_pm

        w, left, _ = self.conv_taps(mode)
        return conv_silu_pm(x, w[:, 0, :].t(), self.conv.bias, left)

    def scan_pm(self, h: torch.Tensor, conv_mode: str, directions=(False,), separate: bool = False, xz=None):
        """(batch, L, d_model) -> Σ over ``directions`` (False forward, True reverse) of the gated scan
        output, (batch, L, d_inner); with ``separate``, a list with one output per direction (the
        projections and the conv computed once for all). ``xz``: ``in_proj(h)`` already computed."""
        from genossm.ops.selective_scan.cpu import ssm_scan_pm

        if xz is None:
            xz = self.in_proj(h)  # (batch, L, 2 d_inner)
        x, z = xz[..., : self.d_inner], xz[..., self.d_inner :]
        u = self.conv_act_pm(x, conv_mode)
        x_dbl = self.x_proj(u)  # (batch, L, dt_rank + 2 d_state)
        dt, B, C = x_dbl.split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = self.dt_proj(dt)  # (batch, L, d_inner); bias and softplus inside
        args = (u, delta, self.A(), B, C, self.D, z, self.dt_bias, True)
        if separate:
            return [ssm_scan_pm(*args, directions=(r,)) for r in directions]
        return ssm_scan_pm(*args, directions=tuple(directions))


class Mamba(nn.Module):
    """The causal Mamba mixer: one forward branch and an output projection, with a recurrent ``step``."""

    mirror_invariant = True  # never used with reverse-complement strands (causal models are not RC-equivariant)

    def __init__(self, d_model, d_inner, d_state, d_conv, dt_rank, backend="auto", **dt_init):
        super().__init__()
        self.backend = backend
        self.branch = SSMBranch(d_model, d_inner, d_state, d_conv, dt_rank, **dt_init)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)

    def forward(self, h: torch.Tensor, mirror: bool = False) -> torch.Tensor:
        if self.branch.position_major(h, self.backend):
            return self.out_proj(self.branch.scan_pm(h, "causal"))
        y = self.branch.run(h, "causal", reverse=False, backend=self.backend)  # (batch, d_inner, L)
        return self.out_proj(y.transpose(1, 2))  # (batch, L, d_model)

    # description used by chunked inference (bimamba.py): (branch, conv mode, reverse, output slot)
    def passes(self, mirror: bool = False):
        return [(self.branch, "causal", False, 0)]

    def slot_weight(self, slot: int) -> torch.Tensor:
        return self.out_proj.weight

    # ---- recurrent inference ------------------------------------------------------------------------
    def init_state(self, batch: int, device=None, dtype=torch.float32):
        b = self.branch
        conv_state = torch.zeros(batch, b.d_inner, b.d_conv - 1, device=device, dtype=dtype)
        ssm_state = torch.zeros(batch, b.d_inner, b.d_state, device=device, dtype=torch.float32)
        return conv_state, ssm_state

    def step(self, h: torch.Tensor, state):
        """One position: h (batch, d_model), state (conv (batch, d_inner, K-1), ssm (batch, d_inner, N))."""
        conv_state, ssm_state = state
        b = self.branch
        x, z = b.in_proj(h).chunk(2, dim=-1)  # (batch, d_inner) each
        window = torch.cat([conv_state, x.unsqueeze(-1)], dim=-1)  # (batch, d_inner, K): x_{t-K+1} .. x_t
        u = F.silu((window * b.conv.weight[:, 0, :]).sum(-1) + b.conv.bias)  # (batch, d_inner)
        # a length-1 scan of the specification, started from the carried state
        y, ssm_state = b.scan(u.unsqueeze(-1), z.unsqueeze(-1), initial_state=ssm_state,
                              return_last_state=True, backend="reference")
        return self.out_proj(y[..., 0]), (window[..., 1:], ssm_state)


class ResidualBlock(nn.Module):
    """Pre-norm residual: h + mixer(RMSNorm(h)). With reverse-complement strands stacked on the batch axis
    (second half = the mirrored strand) the mixer runs on each half with its ``mirror`` flag."""

    def __init__(self, d_model: int, mixer: nn.Module, eps: float = 1e-5, rc_strands: bool = False):
        super().__init__()
        self.norm = nn.RMSNorm(d_model, eps=eps)
        self.mixer = mixer
        self.rc_strands = rc_strands

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = self.norm(h)
        if self.rc_strands and not self.mixer.mirror_invariant:
            xa, xb = x.chunk(2, dim=0)
            return h + torch.cat([self.mixer(xa, mirror=False), self.mixer(xb, mirror=True)], dim=0)
        return h + self.mixer(x)
