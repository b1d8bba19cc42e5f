"""Compute kernels. ``genossm.ops.selective_scan`` is the selective scan (S6) of Mamba."""

from genossm.ops.selective_scan import selective_scan, selective_scan_bidirectional

__all__ = ["selective_scan", "selective_scan_bidirectional"]
