"""Selective scan (S6): one function, three backends that agree in value and gradient.

``selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
return_last_state=False, *, reverse=False, initial_state=None, backend="auto")`` takes the arguments of
``mamba_ssm``'s ``selective_scan_fn`` with the same shapes and meaning:

    u, delta, z      (batch, dim, length), any float dtype
    A                (dim, state) float32 (negative real parts for a stable scan)
    B, C             (batch, state, length) or (batch, groups, state, length)
    D, delta_bias    (dim,) float32
    initial_state    (batch, dim, state): h before the first step taken
    returns          out (batch, dim, length) in u's dtype; with return_last_state also the final state
                     (batch, dim, state) float32

Backends: ``reference`` (sequential loop, the specification), ``chunked`` (PyTorch, any device, O(L)
memory), ``triton`` (fused GPU kernels), ``cpu`` (one fused C loop per channel tile, compiled on first
use; see ``cpu.py``). ``auto`` picks ``triton`` for CUDA tensors when Triton is importable, ``cpu`` for CPU
tensors when the C kernel compiled (and the state size is at most 64), else ``chunked``.

``selective_scan_bidirectional`` runs the forward and the reverse scan over the same inputs, reading
them once, and returns ``(out_forward, out_reverse)``.
"""

from __future__ import annotations

import importlib
import sys
import types

BACKENDS = ("reference", "chunked", "triton", "cpu")


def _triton_usable(tensor) -> bool:
    if not tensor.is_cuda:
        return False
    return importlib.util.find_spec("triton") is not None


def _cpu_usable(tensor, state) -> bool:
    if tensor.device.type != "cpu" or (state is not None and state > 64):
        return False
    from genossm.ops.selective_scan import cpu

    return cpu.available()


def resolve_backend(backend: str, tensor, state: int | None = None) -> str:
    """The backend ``auto`` means for ``tensor`` (and a state size, when known)."""
    if backend == "auto":
        if _triton_usable(tensor):
            return "triton"
        return "cpu" if _cpu_usable(tensor, state) else "chunked"
    if backend not in BACKENDS:
        raise ValueError(f"unknown selective-scan backend {backend!r}; choose one of auto, {', '.join(BACKENDS)}")
    if backend == "triton" and importlib.util.find_spec("triton") is None:
        raise ImportError("the triton selective-scan backend needs Triton, which is not installed: "
                          "pip install 'genossm[gpu]' (or pip install triton); backend='auto' runs without it")
    return backend


def selective_scan(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, return_last_state=False,
    *, reverse=False, initial_state=None, backend="auto", **tuning,
):
    """``tuning``: how the Triton backend cuts the work (``tile_len``, ``tiles_per_chunk``, ``block_d``,
    ``num_warps``, ``backward_block_d``, ``backward_num_warps``); the other backends ignore it."""
    backend = resolve_backend(backend, u, A.shape[1])
    if backend == "reference":
        from genossm.ops.selective_scan.reference import selective_scan_ref as fn
    elif backend == "chunked":
        from genossm.ops.selective_scan.chunked import selective_scan_chunked as fn
    elif backend == "cpu":
        from genossm.ops.selective_scan.cpu import selective_scan_cpu as fn
    else:
        from genossm.ops.selective_scan.triton import selective_scan_triton

        return selective_scan_triton(
            u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state,
            reverse=reverse, initial_state=initial_state, **tuning,
        )
    return fn(
        u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state,
        reverse=reverse, initial_state=initial_state,
    )


def selective_scan_bidirectional(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, *, backend="auto", **tuning,
):
    """Forward and reverse scans of the same inputs -> ``(out_forward, out_reverse)``.

    The Triton backend computes both directions in one pass over the inputs; the other backends call
    :func:`selective_scan` twice with ``reverse`` off and on (never flipping tensors).
    """
    backend = resolve_backend(backend, u, A.shape[1])
    if backend == "triton":
        from genossm.ops.selective_scan.triton import selective_scan_bidirectional_triton

        return selective_scan_bidirectional_triton(u, delta, A, B, C, D, z, delta_bias, delta_softplus, **tuning)
    args = (u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    return (
        selective_scan(*args, reverse=False, backend=backend),
        selective_scan(*args, reverse=True, backend=backend),
    )


__all__ = ["selective_scan", "selective_scan_bidirectional", "BACKENDS", "resolve_backend"]


class _CallablePackage(types.ModuleType):
    """Lets ``genossm.ops.selective_scan(...)`` be called like the function it is named after while
    ``genossm.ops.selective_scan.chunked`` (and the other backends) stay importable as submodules."""

    def __call__(self, *args, **kwargs):
        return selective_scan(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
