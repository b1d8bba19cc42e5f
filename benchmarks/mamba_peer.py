"""``mamba_ssm`` for side-by-side benchmarks: its CUDA selective scan, and a Caduceus-like peer model.

``mamba_ssm``'s package ``__init__`` imports its language-model and generation modules, which need
``transformers``; a benchmark only needs the scan and the Mamba block. ``import_mamba_ssm()`` finds the
``mamba_ssm`` folder on ``sys.path`` (an installed package, or a source tree built in place with its
``selective_scan_cuda`` extension beside it) and registers it as a bare package, so the submodules import
without the ``__init__``.

``PeerBiMambaLM`` is the bidirectional design of Caduceus built from ``mamba_ssm``'s own ``Mamba`` block:
per layer ``h + fwd(x) + flip(rev(flip(x)))`` with ``x = RMSNorm(h)``, the reverse direction obtained by
flipping the sequence, in and out projections shared between the directions (Caduceus'
``bidirectional_weight_tie``), optional per-layer gradient checkpointing. It is the comparison point for
``benchmarks/model.py --device cuda``; it is not part of genossm.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint


def import_mamba_ssm():
    """Returns mamba_ssm's ``selective_scan_fn`` (CUDA). Raises ImportError (name='mamba_ssm') when absent."""
    if "mamba_ssm" not in sys.modules:
        for base in sys.path:
            folder = Path(base or ".") / "mamba_ssm"
            if (folder / "ops" / "selective_scan_interface.py").exists():
                pkg = types.ModuleType("mamba_ssm")
                pkg.__path__ = [str(folder)]
                sys.modules["mamba_ssm"] = pkg
                break
        else:
            raise ImportError("no mamba_ssm folder on sys.path", name="mamba_ssm")
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    return selective_scan_fn


class _PeerLayer(nn.Module):
    def __init__(self, d_model, d_state, d_conv, expand):
        super().__init__()
        import_mamba_ssm()
        from mamba_ssm.modules.mamba_simple import Mamba

        self.norm = nn.RMSNorm(d_model, eps=1e-5)
        # use_fast_path=False: the fused path needs the separate causal_conv1d package
        self.fwd = Mamba(d_model, d_state=d_state, d_conv=d_conv, expand=expand, use_fast_path=False)
        self.rev = Mamba(d_model, d_state=d_state, d_conv=d_conv, expand=expand, use_fast_path=False)
        self.rev.in_proj.weight = self.fwd.in_proj.weight
        self.rev.out_proj.weight = self.fwd.out_proj.weight

    def forward(self, h):  # (batch, L, d_model)
        x = self.norm(h)
        return h + self.fwd(x) + self.rev(x.flip(1)).flip(1)


class PeerBiMambaLM(nn.Module):
    """Caduceus-like bidirectional masked LM on mamba_ssm's Mamba block (tokens -> (batch, L, 4) logits)."""

    def __init__(self, d_model=256, n_layer=16, d_state=16, d_conv=4, expand=2, vocab_size=8,
                 gradient_checkpointing=False):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model)
        self.layers = nn.ModuleList(_PeerLayer(d_model, d_state, d_conv, expand) for _ in range(n_layer))
        self.norm_f = nn.RMSNorm(d_model, eps=1e-5)
        self.lm_head = nn.Linear(d_model, 4, bias=False)
        self.gradient_checkpointing = gradient_checkpointing

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())  # shared weights are counted once

    def forward(self, tokens):
        h = self.embed(tokens)
        for layer in self.layers:
            if self.gradient_checkpointing and self.training:
                h = checkpoint(layer, h, use_reentrant=False)
            else:
                h = layer(h)
        return self.lm_head(self.norm_f(h))
