"""Compute kernels. ``genossm.ops.selective_scan`` is the selective scan (S6) of Mamba.

``genossm.ops.selective_scan`` is both the package holding the backends (``reference``, ``chunked``,
``triton``) and callable as the public scan function: ``genossm.ops.selective_scan(u, delta, A, B, C, ...)``.
"""

from genossm.ops import selective_scan
from genossm.ops.selective_scan import selective_scan_bidirectional

__all__ = ["selective_scan", "selective_scan_bidirectional"]
