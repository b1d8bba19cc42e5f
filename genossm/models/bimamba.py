"""Bidirectional Mamba language model over nucleotides, with an exactly reverse-complement-equivariant option.

Shapes: B batch, L length, D = d_model, E = expand * D (d_inner), S = 2 strands with ``rc_equivariant``
else 1, H = S * D the width of ``hidden()``.

**Directions.** Each layer scans forward and in reverse through the selective scan's ``reverse`` flag or
its bidirectional entry point; nothing flips a sequence.

* ``tie_directions: true`` (default): one set of weights and one *symmetric* depthwise conv (the causal
  taps plus their mirror images, so it sees d_conv - 1 bases on either side). Both directions then
  read the same (u, Δ, B, C, z), which goes through ``selective_scan_bidirectional`` once (the fused
  GPU kernel reads it a single time). This is the fast path.
* ``tie_directions: false``: two branches; the forward one has a causal conv and scans forward, the
  reverse one an anti-causal conv (padded on the right) and scans in reverse.

Outputs combine by ``add`` (one out_proj of y_fwd + y_rev) or ``proj`` (out_proj over [y_1; y_2],
each branch's slot of the projection fixed to its parameters).

**Why this gives RC equivariance cheaply.** Let flip reverse positions. A reverse direction is the
mirror image of a forward one: reverse(θ) = flip ∘ forward(θ) ∘ flip, since the anti-causal conv is the
causal conv's mirror. So for any layer mixer M, flip ∘ M ∘ flip is M with the roles of its two
parameter slots swapped ("mirrored": slot 1 runs in reverse, slot 2 forward). With tied weights and
``add`` the mirror is M itself: the tied symmetric-conv mixer commutes with flip.

**RC-equivariant option** (``rc_equivariant: true``, in the spirit of Caduceus-PS). The hidden state
holds two strands of width D: strand 1 embeds the sequence, strand 2 embeds its complement (not
reversed). Layers run the mixer on strand 1 and the mirrored mixer on strand 2, with shared weights;
norms act per strand. Define R(h)[t] = swap_strands(h[L-1-t]). The embedding satisfies
embed(rc(x)) = R(embed(x)), each layer commutes with R (because M_mirror = flip ∘ M ∘ flip), and the LM
head reads strand 1 for base b and strand 2 for its complement 3 - b, so

    logits(rc(x))[t, b] = logits(x)[L-1-t, 3-b]     exactly (to float rounding).

Strands are stacked on the batch axis (2B, L, D); for the default tied ``add`` mixer both strands go
through one batched call, so RC equivariance costs a doubled batch and no flips. ``embed`` averages
the strands per position, so ``embed(rc(x))[t] = embed(x)[L-1-t]`` and its mean pooling is RC-invariant.

**Causal mode** (``bidirectional: false``): forward branch only, next-base head (logits at t predict
base t+1), recurrent ``step()`` with constant memory and ``generate()``.

**Million-base inference** (``hidden_chunked``): layer by layer over the whole sequence. A layer reads
its input h (S·B, L, D), keeps a residual copy it adds into, and runs each scan direction over chunks
of ``chunk_len`` (forward chunks from the start, reverse chunks from the end), carrying the SSM state
across chunk borders; the conv's context at a border (d_conv - 1 positions) is read from the layer
input. Since out_proj is linear, each chunk's contribution is added straight into the layer output, so
memory is two (S·B, L, D) activations plus one chunk's intermediates, whatever the number of chunks.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from genossm.vocab import NUM_BASES, VOCAB, complement
from genossm.errors import GenossmError
from genossm.models.heads import LMHead, pool
from genossm.models.mamba import Mamba, ResidualBlock, SSMBranch
from genossm.ops.selective_scan import BACKENDS

STRATEGIES = ("add", "proj")


@dataclass
class BiMambaConfig:
    d_model: int = 64
    n_layers: int = 4
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    dt_rank: Any = "auto"  # int, or "auto" = ceil(d_model / 16)
    dt_min: float = 0.001
    dt_max: float = 0.1
    bidirectional: bool = True  # False: causal next-base model
    bidirectional_strategy: str = "add"  # "add" | "proj"
    tie_directions: bool = True
    rc_equivariant: bool = False
    tie_embeddings: bool = True
    gradient_checkpointing: bool = False
    scan_backend: str = "auto"  # auto | reference | chunked | triton
    vocab_size: int = 8
    norm_eps: float = 1e-5
    # Options a foreign checkpoint needs (Caduceus / PlantCaduceus, see genossm.models.caduceus); genossm's own
    # configs leave them at their defaults, and to_dict() then leaves them out, so saved configs are unchanged.
    share_in_proj: bool = False  # tie_directions false: both directions share one in_proj (Caduceus' weight tie)
    strand_swap: bool = False  # rc_equivariant: before each block swap the strands and reverse channels (Caduceus-PS)
    token_ids: Any = None  # embedding row of each genossm token id (A C G T N pad mask cls); None: the ids themselves

    def __post_init__(self):
        problems = []
        for name in ("bidirectional", "tie_directions", "rc_equivariant", "tie_embeddings", "gradient_checkpointing",
                     "share_in_proj", "strand_swap"):
            if not isinstance(getattr(self, name), bool):
                problems.append(f"{name} must be true or false, got {getattr(self, name)!r}")
        for name in ("dt_min", "dt_max", "norm_eps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                problems.append(f"{name} must be a positive number, got {value!r}")
        if problems:  # the checks below assume the types are right
            raise GenossmError("invalid model config: " + "; ".join(problems))
        for name in ("d_model", "n_layers", "d_state", "d_conv", "expand", "vocab_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                problems.append(f"{name} must be a positive integer, got {value!r}")
        if self.dt_rank != "auto" and (not isinstance(self.dt_rank, int) or self.dt_rank < 1):
            problems.append(f"dt_rank must be a positive integer or 'auto', got {self.dt_rank!r}")
        if self.bidirectional_strategy not in STRATEGIES:
            problems.append(f"bidirectional_strategy must be one of {STRATEGIES}, got {self.bidirectional_strategy!r}")
        if self.scan_backend not in ("auto", *BACKENDS):
            problems.append(f"scan_backend must be one of auto, {', '.join(BACKENDS)}, got {self.scan_backend!r}")
        if self.rc_equivariant and not self.bidirectional:
            problems.append("rc_equivariant needs bidirectional: true (a next-base model reads one strand)")
        if isinstance(self.vocab_size, int) and self.vocab_size < NUM_BASES:
            problems.append(f"vocab_size must be at least {NUM_BASES}")
        if not 0 < self.dt_min <= self.dt_max:
            problems.append(f"need 0 < dt_min <= dt_max, got {self.dt_min}, {self.dt_max}")
        if self.share_in_proj and (self.tie_directions or not self.bidirectional):
            problems.append("share_in_proj needs bidirectional: true and tie_directions: false")
        if self.strand_swap and not self.rc_equivariant:
            problems.append("strand_swap needs rc_equivariant: true")
        if self.token_ids is not None:
            ids = self.token_ids
            if (not isinstance(ids, (list, tuple)) or len(ids) != len(VOCAB)
                    or any(isinstance(i, bool) or not isinstance(i, int) for i in ids)
                    or (isinstance(self.vocab_size, int) and any(not 0 <= i < self.vocab_size for i in ids))):
                problems.append(f"token_ids must be {len(VOCAB)} embedding rows in [0, vocab_size) for {list(VOCAB)}, "
                                f"got {ids!r}")
            else:
                self.token_ids = list(ids)
        if problems:
            raise GenossmError("invalid model config: " + "; ".join(problems))

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def dt_rank_value(self) -> int:
        return math.ceil(self.d_model / 16) if self.dt_rank == "auto" else self.dt_rank

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        for name in FOREIGN_OPTIONS:  # at their defaults, left out: configs saved before they existed stay the same
            if values[name] == FOREIGN_OPTIONS[name]:
                del values[name]
        return values

    @classmethod
    def from_dict(cls, values: Mapping, source: str = "model config") -> "BiMambaConfig":
        if not isinstance(values, Mapping):
            raise GenossmError(f"{source}: the model config must be a mapping of fields, got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise GenossmError(f"{source}: unknown model config field(s) {unknown}; known fields: {sorted(known)}")
        try:
            return cls(**{k: values[k] for k in values})
        except GenossmError as err:
            raise GenossmError(f"{source}: {err}") from None


# the options only foreign checkpoints set, with their defaults (BiMambaConfig.to_dict leaves them out at these)
FOREIGN_OPTIONS = {"share_in_proj": False, "strand_swap": False, "token_ids": None}


class BiMambaMixer(nn.Module):
    """Forward + reverse selective scans of (B, L, D) -> (B, L, D); ``mirror`` swaps the directions' roles."""

    def __init__(self, cfg: BiMambaConfig):
        super().__init__()
        self.tied, self.strategy, self.backend = cfg.tie_directions, cfg.bidirectional_strategy, cfg.scan_backend
        self.d_inner = cfg.d_inner
        branch = lambda in_proj=None: SSMBranch(cfg.d_model, cfg.d_inner, cfg.d_state, cfg.d_conv,  # noqa: E731
                                                cfg.dt_rank_value, dt_min=cfg.dt_min, dt_max=cfg.dt_max, in_proj=in_proj)
        first = branch()
        self.shared_in_proj = cfg.share_in_proj
        rest = [] if self.tied else [branch(first.in_proj if cfg.share_in_proj else None)]
        self.branches = nn.ModuleList([first, *rest])
        self.out_proj = nn.Linear(cfg.d_inner * (2 if self.strategy == "proj" else 1), cfg.d_model, bias=False)
        self.mirror_invariant = self.tied and self.strategy == "add"

    def passes(self, mirror: bool = False):
        """The scans this mixer runs: (branch, conv mode, reverse, output slot)."""
        if self.tied:
            b = self.branches[0]
            return [(b, "symmetric", False, 1 if mirror else 0), (b, "symmetric", True, 0 if mirror else 1)]
        b1, b2 = self.branches
        if mirror:
            return [(b1, "anticausal", True, 0), (b2, "causal", False, 1)]
        return [(b1, "causal", False, 0), (b2, "anticausal", True, 1)]

    def slot_weight(self, slot: int) -> torch.Tensor:
        """The part of out_proj applied to one slot's y (out_proj is linear and has no bias)."""
        if self.strategy == "add":
            return self.out_proj.weight
        return self.out_proj.weight[:, slot * self.d_inner : (slot + 1) * self.d_inner]

    def forward(self, h: torch.Tensor, mirror: bool = False) -> torch.Tensor:
        if self.branches[0].position_major(h, self.backend):
            return self._forward_pm(h, mirror)
        if self.tied:
            b = self.branches[0]
            x, z = b.project_in(h)  # (B, E, L) each
            y_fwd, y_rev = b.scan_bidirectional(b.conv_act(x, "symmetric"), z, backend=self.backend)
            slots = [y_rev, y_fwd] if mirror else [y_fwd, y_rev]
        else:
            slots = [None, None]
            xz = self.branches[0].project_in(h) if self.shared_in_proj else None  # once for both directions
            for branch, mode, reverse, slot in self.passes(mirror):
                slots[slot] = branch.run(h, mode, reverse, backend=self.backend, xz=xz)  # (B, E, L)
        y = slots[0] + slots[1] if self.strategy == "add" else torch.cat(slots, dim=1)
        return self.out_proj(y.transpose(1, 2))  # (B, L, D)

    def _forward_pm(self, h: torch.Tensor, mirror: bool) -> torch.Tensor:
        """The same mixer in the fused CPU scan's (B, L, E) layout (see mamba.py)."""
        if self.tied and self.strategy == "add":  # one kernel call scans both directions and sums them
            return self.out_proj(self.branches[0].scan_pm(h, "symmetric", (False, True)))
        if self.tied:  # proj: both directions from one set of projections, in slot order
            y_fwd, y_rev = self.branches[0].scan_pm(h, "symmetric", (False, True), separate=True)
            return self.out_proj(torch.cat([y_rev, y_fwd] if mirror else [y_fwd, y_rev], dim=-1))
        slots = [None, None]
        xz = self.branches[0].in_proj(h) if self.shared_in_proj else None  # once for both directions
        for branch, mode, reverse, slot in self.passes(mirror):
            slots[slot] = branch.scan_pm(h, mode, (reverse,), xz=xz)  # (B, L, E)
        y = slots[0] + slots[1] if self.strategy == "add" else torch.cat(slots, dim=-1)
        return self.out_proj(y)


def average_strands(emb_fwd: torch.Tensor, emb_rc: torch.Tensor) -> torch.Tensor:
    """The strand-averaged embedding: the mean of a sequence's and its reverse complement's (or of the two
    strands of an RC-equivariant hidden state)."""
    return 0.5 * (emb_fwd + emb_rc)


class BiMambaLM(nn.Module):
    """Embedding -> n_layers pre-norm residual (Bi)Mamba blocks -> RMSNorm -> LM head over A, C, G, T."""

    def __init__(self, config: BiMambaConfig | Mapping):
        super().__init__()
        if not isinstance(config, BiMambaConfig):
            config = BiMambaConfig.from_dict(config)
        self.config = cfg = config
        self.n_strands = 2 if cfg.rc_equivariant else 1
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.d_model)
        layers = []
        for _ in range(cfg.n_layers):
            if cfg.bidirectional:
                mixer = BiMambaMixer(cfg)
            else:
                mixer = Mamba(cfg.d_model, cfg.d_inner, cfg.d_state, cfg.d_conv, cfg.dt_rank_value,
                              backend=cfg.scan_backend, dt_min=cfg.dt_min, dt_max=cfg.dt_max)
            layers.append(ResidualBlock(cfg.d_model, mixer, eps=cfg.norm_eps, rc_strands=cfg.rc_equivariant))
        self.layers = nn.ModuleList(layers)
        self.norm_f = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        base_rows = None if cfg.token_ids is None else cfg.token_ids[:NUM_BASES]
        self.lm_head = LMHead(cfg.d_model, rc_strands=cfg.rc_equivariant, tied=cfg.tie_embeddings, base_rows=base_rows)
        # a foreign vocabulary: genossm token id -> embedding row (not saved: it comes from the config)
        self.register_buffer("token_rows", None if cfg.token_ids is None else torch.tensor(cfg.token_ids),
                             persistent=False)
        self._init_weights()

    def _init_weights(self):
        nn.init.normal_(self.embedding.weight, std=0.02)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith("out_proj.weight"):  # GPT-2 style: keep the residual stream's scale with depth
                    p /= math.sqrt(self.config.n_layers)

    # ---- sizes ----------------------------------------------------------------------------------------
    @property
    def hidden_dim(self) -> int:
        """Width of ``hidden()``: d_model, or 2 * d_model (both strands) when rc_equivariant."""
        return self.n_strands * self.config.d_model

    @property
    def embed_dim(self) -> int:
        """Width of ``embed()``: d_model (strands averaged when rc_equivariant)."""
        return self.config.d_model

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def set_scan_backend(self, backend: str) -> None:
        """Switch the selective-scan backend of every layer (the weights do not change)."""
        self.config = dataclasses.replace(self.config, scan_backend=backend)
        for layer in self.layers:
            layer.mixer.backend = backend

    # ---- parallel forward -------------------------------------------------------------------------------
    def _embed_strands(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, L) -> (S·B, L, D): strand 2 embeds the complement (same order of positions)."""
        if self.n_strands == 2:
            tokens = torch.cat([tokens, complement(tokens)], dim=0)
        if self.token_rows is not None:
            tokens = self.token_rows[tokens]
        return self.embedding(tokens)

    def _before_block(self, h: torch.Tensor) -> torch.Tensor:
        """What happens to the hidden state before each block: with ``strand_swap`` (Caduceus-PS) the two
        strands trade places and reverse their channels, as the original RCPS blocks' fused add-norm does
        (each block reads the other half as its forward strand). RC equivariance is kept: the swap commutes
        with swapping strands and reversing positions."""
        if not self.config.strand_swap:
            return h
        n = h.shape[0] // 2
        return torch.cat([h[n:], h[:n]], dim=0).flip(-1)

    def _merge_strands(self, h: torch.Tensor) -> torch.Tensor:
        """(S·B, L, D) -> (B, L, S·D)."""
        return torch.cat(h.chunk(self.n_strands, dim=0), dim=-1) if self.n_strands == 2 else h

    def hidden(self, tokens: torch.Tensor, chunk_len: int | None = None) -> torch.Tensor:
        """tokens (B, L) long -> per-position features (B, L, hidden_dim) after the final norm.

        ``chunk_len``: run the long-sequence inference mode (no gradients; see :meth:`hidden_chunked`)."""
        if chunk_len is not None:
            return self.hidden_chunked(tokens, chunk_len)
        h = self._embed_strands(tokens)  # (S·B, L, D)
        for layer in self.layers:
            h = self._before_block(h)
            if self.config.gradient_checkpointing and self.training and torch.is_grad_enabled():
                h = checkpoint(layer, h, use_reentrant=False)
            else:
                h = layer(h)
        return self._merge_strands(self.norm_f(h))

    def forward(self, tokens: torch.Tensor, chunk_len: int | None = None) -> torch.Tensor:
        """tokens (B, L) long -> logits (B, L, 4) over A, C, G, T (masked LM, or next base when causal)."""
        return self.lm_head(self.hidden(tokens, chunk_len), self.embedding.weight)

    def embed(self, tokens: torch.Tensor, pooling: str | None = "mean", valid: torch.Tensor | None = None,
              chunk_len: int | None = None, *, rc_invariant: bool = False,
              one_strand_poolings: Sequence[str] = ("mean",)) -> torch.Tensor:
        """Embeddings: (B, embed_dim) pooled ("mean" | "center") or (B, L, embed_dim) with pooling=None.

        ``valid`` (B, L) bool marks real positions for pooling. With rc_equivariant the strands are
        averaged per position, so the mean-pooled embedding of a sequence and of its reverse complement
        are equal.

        ``rc_invariant``: the pooled embedding of the sequence averaged with that of its reverse complement
        (``valid`` flipped with it), unless :meth:`embed_strands` says one strand does (see
        ``one_strand_poolings`` there)."""
        if rc_invariant:
            if pooling is None:
                raise ValueError("rc_invariant needs a pooling: per-position embeddings of the two strands do not line up")
            emb = self.embed(tokens, pooling, valid, chunk_len)
            if self.embed_strands(pooling, one_strand_poolings) == 1:
                return emb
            rc_valid = None if valid is None else valid.flip(-1)
            return average_strands(emb, self.embed(complement(tokens).flip(-1), pooling, rc_valid, chunk_len))
        h = self.hidden(tokens, chunk_len)
        if self.n_strands == 2:
            h_fwd, h_rc = h.chunk(2, dim=-1)
            h = average_strands(h_fwd, h_rc)
        return h if pooling is None else pool(h, pooling, valid)

    def embed_strands(self, pooling: str, one_strand_poolings: Sequence[str] = ("mean",)) -> int:
        """How many strands a reverse-complement-invariant pooled embedding is averaged over: 1 where the
        model's own embedding serves, 2 (the sequence and its reverse complement) otherwise.

        One strand serves when the model is rc_equivariant and ``pooling`` is one of ``one_strand_poolings``.
        The default, ``("mean",)``, is exact: mean pooling of an RC-equivariant model is RC-invariant by
        construction, centre pooling only for odd lengths (the centre of an even-length sequence is a
        different base of its reverse complement). Region embeddings use the default; the variant scorer
        passes every pooling (:data:`genossm.models.heads.POOLINGS`), so an RC-equivariant model's centre
        pooling reads the forward window at its centre, the variant."""
        return 1 if self.config.rc_equivariant and pooling in one_strand_poolings else 2

    # ---- long-sequence inference ----------------------------------------------------------------------
    @torch.no_grad()
    def hidden_chunked(self, tokens: torch.Tensor, chunk_len: int = 65536) -> torch.Tensor:
        """Same result as ``hidden(tokens)`` (to float rounding), computed layer by layer in chunks.

        Memory: two (S·B, L, D) activations plus one chunk's intermediates (independent of the number of
        chunks). The SSM state crosses chunk borders forwards for forward scans and backwards for
        reverse scans; the conv reads its d_conv - 1 positions of context from the layer input."""
        if chunk_len < 1:
            raise ValueError(f"chunk_len must be positive, got {chunk_len}")
        h = self._embed_strands(tokens)  # (S·B, L, D)
        n = h.shape[0] // self.n_strands
        for layer in self.layers:
            h = self._before_block(h)
            out = h.clone()  # the residual; each scan pass adds its share of out_proj(y) into it
            if self.n_strands == 2 and not layer.mixer.mirror_invariant:
                groups = [(slice(0, n), False), (slice(n, 2 * n), True)]
            else:
                groups = [(slice(None), False)]
            for rows, mirror in groups:
                for branch, mode, reverse, slot in layer.mixer.passes(mirror):
                    self._chunked_pass(layer.norm, branch, mode, reverse, layer.mixer.slot_weight(slot),
                                       h[rows], out[rows], chunk_len)
            h = out
        # final norm chunk by chunk into the output, so at most two activations are alive at any time
        final = h.new_empty(n, h.shape[1], self.hidden_dim)  # (B, L, S·D)
        for s in range(0, h.shape[1], chunk_len):
            final[:, s : s + chunk_len] = self._merge_strands(self.norm_f(h[:, s : s + chunk_len]))
        return final

    def _chunked_pass(self, norm, branch, mode, reverse, weight, h, out, chunk_len):
        """One scan direction of one layer over h (b, L, D) in chunks, adding y @ weight.T into out."""
        length = h.shape[1]
        _, left, right = branch.conv_taps(mode)
        starts = list(range(0, length, chunk_len))
        state = None  # (b, E, N) SSM state carried across chunk borders
        for s in reversed(starts) if reverse else starts:
            e = min(s + chunk_len, length)
            lo, hi = max(0, s - left), min(length, e + right)  # chunk plus the conv's context
            x, z = branch.project_in(norm(h[:, lo:hi]))  # (b, E, hi - lo)
            x = F.pad(x, (left - (s - lo), right - (hi - e)))  # zeros only beyond the sequence ends
            u = branch.conv_act(x, mode, padded=True)  # (b, E, e - s)
            y, state = branch.scan(u, z[..., s - lo : e - lo], reverse=reverse, initial_state=state,
                                   return_last_state=True, backend=self.config.scan_backend)
            out[:, s:e] += F.linear(y.transpose(1, 2), weight)

    # ---- causal: recurrent inference and sampling -------------------------------------------------------
    def _require_causal(self, what: str):
        if self.config.bidirectional:
            raise GenossmError(f"{what}() needs a causal model (bidirectional: false); this model is bidirectional")

    def init_state(self, batch: int, device=None) -> list:
        self._require_causal("init_state")
        device = device or self.embedding.weight.device
        return [layer.mixer.init_state(batch, device, self.embedding.weight.dtype) for layer in self.layers]

    def step(self, token: torch.Tensor, state: list | None = None):
        """Advance one base: token (B,) long, state from ``init_state`` or the last step (None = start).

        Returns (logits (B, 4) for the next base, new state); memory is the conv and SSM state only."""
        self._require_causal("step")
        if state is None:
            state = self.init_state(token.shape[0], token.device)
        h = self.embedding(token if self.token_rows is None else self.token_rows[token])  # (B, D)
        new_state = []
        for layer, layer_state in zip(self.layers, state):
            y, layer_state = layer.mixer.step(layer.norm(h), layer_state)
            h = h + y
            new_state.append(layer_state)
        return self.lm_head(self.norm_f(h), self.embedding.weight), new_state

    @torch.no_grad()
    def generate(self, prompt: torch.Tensor, n: int, temperature: float = 1.0, top_k: int | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample ``n`` bases after ``prompt`` ((B, P) or (P,) long, P >= 1) -> (B, P + n) token ids.

        temperature <= 0 picks the most likely base; top_k keeps the k most likely bases."""
        self._require_causal("generate")
        if prompt.dim() == 1:
            prompt = prompt.unsqueeze(0)
        if prompt.shape[1] < 1:
            raise ValueError("generate() needs a prompt of at least one base")
        state, logits = None, None
        for t in range(prompt.shape[1]):
            logits, state = self.step(prompt[:, t], state)
        out = [prompt]
        for i in range(n):
            if temperature <= 0:
                nxt = logits.argmax(-1)
            else:
                scaled = logits.float() / temperature
                if top_k is not None and top_k < scaled.shape[-1]:
                    kth = scaled.topk(top_k, dim=-1).values[..., -1:]
                    scaled = scaled.masked_fill(scaled < kth, float("-inf"))
                nxt = torch.multinomial(scaled.softmax(-1), 1, generator=generator)[:, 0]
            out.append(nxt.unsqueeze(1))
            if i < n - 1:
                logits, state = self.step(nxt, state)
        return torch.cat(out, dim=1)
