"""A Caduceus-style bidirectional, RC-averaged masked LM built from HF ``transformers``' ``MambaMixer``.

The comparison point of ``benchmarks/model.py --cpu``; not part of genossm. Same sizes as a genossm model
config (d_model, n_layers, d_state, d_conv, expand, dt_rank ceil(d_model / 16)). Per layer, as Caduceus'
BiMamba: ``h + fwd(x) + flip(rev(flip(x)))`` with ``x = RMSNorm(h)``, the reverse direction obtained by
flipping the sequence, in and out projections shared between the directions (``bidirectional_weight_tie``).
Reverse-complement handling as Caduceus' post-hoc conjoining: the model runs on the sequence and on its
reverse complement and averages the logits (the second set flipped back and complemented).

Without ``mamba_ssm`` and ``causal_conv1d`` (always on CPU) the mixer takes transformers' PyTorch fallback
("slow path"). Needs ``pip install -e ".[bench]"``.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn


class _PeerLayer(nn.Module):
    def __init__(self, cfg, index):
        super().__init__()
        from transformers.models.mamba.modeling_mamba import MambaMixer

        self.norm = nn.RMSNorm(cfg.hidden_size, eps=1e-5)
        self.fwd = MambaMixer(cfg, 2 * index)
        self.rev = MambaMixer(cfg, 2 * index + 1)
        self.rev.in_proj.weight = self.fwd.in_proj.weight
        self.rev.out_proj.weight = self.fwd.out_proj.weight

    def forward(self, h):  # (batch, L, d_model)
        x = self.norm(h)
        return h + self.fwd(x) + self.rev(x.flip(1)).flip(1)


class HFPeerLM(nn.Module):
    def __init__(self, d_model=256, n_layers=16, d_state=16, d_conv=4, expand=2, vocab_size=8, rc=True, **_):
        super().__init__()
        import logging

        from transformers import MambaConfig
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()  # the "falling back to PyTorch" notes, once per mixer
        logging.getLogger("transformers").setLevel(logging.ERROR)
        cfg = MambaConfig(hidden_size=d_model, state_size=d_state, conv_kernel=d_conv, expand=expand,
                          time_step_rank=math.ceil(d_model / 16), num_hidden_layers=2 * n_layers, use_mambapy=False)
        self.embed = nn.Embedding(vocab_size, d_model)
        self.layers = nn.ModuleList(_PeerLayer(cfg, i) for i in range(n_layers))
        self.norm_f = nn.RMSNorm(d_model, eps=1e-5)
        self.rc = rc

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _logits(self, tokens):
        h = self.embed(tokens)
        for layer in self.layers:
            h = layer(h)
        return self.norm_f(h) @ self.embed.weight[:4].t()  # tied head over A, C, G, T

    def forward(self, tokens):  # tokens (batch, L), A C G T = 0 1 2 3
        logits = self._logits(tokens)
        if not self.rc:
            return logits
        rc = torch.where(tokens < 4, 3 - tokens, tokens).flip(1)
        return 0.5 * (logits + self._logits(rc).flip(1).flip(-1))
