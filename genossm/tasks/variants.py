"""Variant effect scores from a pretrained genossm model, streamed through Lightning's predict loop.

Scores (natural log; every score is "alt minus ref", so **negative = alt less likely than ref**):

* **SNV, masked LM** (``llr``): in a window of ``window_len`` bases centred on the variant, the variant
  position is replaced by ``<mask>`` and ``log P(alt) - log P(ref)`` is read from the model's logits there.
* **indel / MNV, masked LM** (``llr``): a pseudo-log-likelihood (PLL) difference. The ref window is centred
  on REF; the alt window has the same left flank, ALT in place of REF and the right flank filled up to the
  same length. The scored span is the allele plus ``indel_flank`` bases on each side (fewer at a window
  edge, the same number in both windows). PLL = sum over the span of ``log P(base | rest) + log 4`` with
  each span position masked in turn (one forward pass each); ``+ log 4`` per scored base makes a base the
  model cannot predict count 0, so an insertion is not penalised merely for adding bases. ``llr = PLL(alt)
  - PLL(ref)``. For an SNV the same formula gives exactly the masked-position LLR above.
* **causal (next-base) models** (``llr``): the same difference with the exact log-likelihood of the whole
  window, ``sum_t log P(x_t+1 | x_<=t) + log 4``, for SNVs and indels alike.
* **strands**: each score is averaged over the forward strand and the reverse complement (``strands:
  both``). With an RC-equivariant model the two are equal, so ``strands: auto`` reads only the forward one.
* **embedding distance** (``emb_dist``): distance (cosine by default) between the mean-pooled embeddings of
  the unmasked ref and alt windows; embeddings are RC-invariant (an RC-equivariant model's own pooling,
  or the average over both strands otherwise).

Alleles that cannot be scored keep an empty score and a reason (:data:`genossm.data.variants.REASONS`).
Windows near a contig edge are shifted to stay inside the contig (the variant is then off-centre);
a contig shorter than the window is used whole.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass

import lightning as L
import torch

from genossm.data import tokenizer
from genossm.errors import GenossmError
from genossm.models.bimamba import average_strands

log = logging.getLogger(__name__)

LOG4 = math.log(4.0)
MAX_WINDOW = 1 << 20
DEFAULT_WINDOW = 2048
STRAND_OPTIONS = ("auto", "both", "forward")
DISTANCES = ("cosine", "euclidean")


def default_window_len(pretrained: str | os.PathLike | None) -> int:
    """score-variants' window when ``window_len=`` is not set: :func:`genossm.models.hub.default_window_len`
    with a cap and fallback of 2048 (the model's training window or 2048, whichever is smaller)."""
    from genossm.models import hub

    extra = hub.load_extra(pretrained) if pretrained is not None else None
    return hub.default_window_len(extra, fallback=DEFAULT_WINDOW, cap=DEFAULT_WINDOW)


GPU_TOKENS_PER_FORWARD = 1 << 18
CPU_ELEMENTS_PER_FORWARD = 1 << 19  # tokens x d_model of one model call on a CPU


def cpu_tokens_per_forward(d_model: int) -> int:
    """Tokens per model call on a CPU: small enough that a call's activations stay in the CPU's caches.
    Calls of 2^18 tokens ran the tiny model (d_model 64) at about half the speed of calls of 2^13 (each op then
    streams hundreds of MiB through memory and faults in fresh pages); the scores do not depend on it."""
    return max(256, CPU_ELEMENTS_PER_FORWARD // max(int(d_model), 1))


@dataclass
class ScoringOptions:
    window_len: int = DEFAULT_WINDOW
    strands: str = "auto"  # auto | both | forward
    indel_flank: int = 8
    emb_dist: bool = True  # compute the embedding distance
    distance: str = "cosine"  # cosine | euclidean
    pooling: str = "mean"  # mean | center
    keep_embeddings: bool = False  # return the ref/alt embeddings too
    tokens_per_forward: int | None = None  # rows per model call = max(1, tokens_per_forward // window length);
    # None: GPU_TOKENS_PER_FORWARD on a GPU, cpu_tokens_per_forward(d_model) on a CPU
    chunk_len: int | None = None  # the model's long-sequence chunked inference, for very long windows

    def window_args(self) -> dict:
        """What the batch building needs of these options (:class:`genossm.data.variant_windows.BatchBuilder`)."""
        return {"window_len": int(self.window_len), "indel_flank": int(self.indel_flank), "emb_dist": bool(self.emb_dist)}

    def check(self) -> None:
        if not 8 <= int(self.window_len) <= MAX_WINDOW:
            raise GenossmError(f"window_len must be between 8 and {MAX_WINDOW:,} bases, got {self.window_len}")
        if self.strands not in STRAND_OPTIONS:
            raise GenossmError(f"strands must be one of {STRAND_OPTIONS}, got {self.strands!r}")
        if self.distance not in DISTANCES:
            raise GenossmError(f"distance must be one of {DISTANCES}, got {self.distance!r}")
        if self.pooling not in ("mean", "center"):
            raise GenossmError(f"pooling must be mean or center, got {self.pooling!r}")
        if self.indel_flank < 0:
            raise GenossmError(f"indel_flank must be >= 0, got {self.indel_flank}")


# --------------------------------------------------------------------------------------------------
# the model side


class VariantScorer(L.LightningModule):
    """Wraps a pretrained :class:`~genossm.models.BiMambaLM`; ``predict_step`` turns a prepared batch into
    one ``llr`` / ``emb_dist`` per allele (NaN where it has no score)."""

    def __init__(self, model, opts: ScoringOptions):
        super().__init__()
        self.model = model.eval()
        self.opts = opts

    def _forward_batches(self, tokens: torch.Tensor):
        """(first row, rows) slices of ``tokens`` of at most ``tokens_per_forward`` tokens: one model call each."""
        per_forward = self.opts.tokens_per_forward
        if per_forward is None:
            per_forward = (cpu_tokens_per_forward(self.model.config.d_model) if tokens.device.type == "cpu"
                           else GPU_TOKENS_PER_FORWARD)
        rows = max(1, int(per_forward) // max(tokens.shape[1], 1))
        for i in range(0, tokens.shape[0], rows):
            yield i, tokens[i : i + rows]

    def _logp(self, tokens: torch.Tensor) -> torch.Tensor:
        logits = self.model(tokens, chunk_len=self.opts.chunk_len) if self.opts.chunk_len else self.model(tokens)
        return torch.log_softmax(logits.float(), dim=-1)

    @staticmethod
    def _strand_average(emb: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """(n, H) RC-invariant embedding of each allele from the rows (n, strands) of its windows' embeddings:
        the strands averaged, or the one strand where the model's own embedding serves
        (:meth:`~genossm.models.BiMambaLM.embed_strands`)."""
        return emb[rows[:, 0]] if rows.shape[1] == 1 else average_strands(emb[rows[:, 0]], emb[rows[:, 1]])

    @torch.no_grad()
    def predict_step(self, batch: dict, batch_idx: int = 0, dataloader_idx: int = 0) -> dict:
        n = batch["index"].shape[0]
        device = batch["index"].device
        strand_sum = torch.zeros(2 * n, dtype=torch.float64, device=device)
        strand_has = torch.zeros(2 * n, dtype=torch.bool, device=device)
        for g in batch["logit_groups"]:
            tokens = g["tokens"]
            values = torch.zeros(g["term_row"].shape[0], dtype=torch.float64, device=device)
            for i0, part in self._forward_batches(tokens):
                sel = (g["term_row"] >= i0) & (g["term_row"] < i0 + part.shape[0])
                if not bool(sel.any()):
                    continue
                logp = self._logp(part)  # (rows, L, 4)
                rows, pos, base = g["term_row"][sel] - i0, g["term_pos"][sel], g["term_base"][sel]
                whole = pos < 0
                v = torch.zeros(rows.shape[0], dtype=torch.float64, device=device)
                if bool((~whole).any()):
                    v[~whole] = logp[rows[~whole], pos[~whole], base[~whole]].double() + LOG4
                if bool(whole.any()):
                    nxt = part[:, 1:]
                    ok = nxt < tokenizer.NUM_BASES
                    lp = logp[:, :-1].gather(-1, nxt.clamp(max=3).unsqueeze(-1)).squeeze(-1).double() + LOG4
                    seq_ll = (lp * ok).sum(-1)
                    v[whole] = seq_ll[rows[whole]]
                values[sel] = v
            strand_sum.index_add_(0, g["term_owner"], g["term_coef"].to(values.dtype) * values)
            strand_has[g["term_owner"]] = True
        strand_sum, strand_has = strand_sum.view(n, 2), strand_has.view(n, 2)
        n_strands = strand_has.sum(1)
        llr = torch.where(n_strands > 0, (strand_sum * strand_has).sum(1) / n_strands.clamp(min=1),
                          torch.full_like(n_strands, float("nan"), dtype=torch.float64))
        out = {"index": batch["index"], "reason": batch["reason"], "llr": llr}

        emb_dist = torch.full((n,), float("nan"), dtype=torch.float64, device=device)
        if self.opts.emb_dist and batch["emb_groups"]:
            n_emb = sum(g["ids"].shape[0] for g in batch["emb_groups"])
            emb = None
            for g in batch["emb_groups"]:
                for i0, part in self._forward_batches(g["tokens"]):
                    e = self.model.embed(part, pooling=self.opts.pooling, chunk_len=self.opts.chunk_len).float()
                    if emb is None:
                        emb = torch.zeros(n_emb, e.shape[-1], device=device)
                    emb[g["ids"][i0 : i0 + part.shape[0]]] = e
            ok = batch["emb_ok"]
            e_ref, e_alt = self._strand_average(emb, batch["emb_ref"]), self._strand_average(emb, batch["emb_alt"])
            if self.opts.distance == "cosine":
                d = 1.0 - torch.nn.functional.cosine_similarity(e_ref.double(), e_alt.double(), dim=-1, eps=1e-12)
            else:
                d = (e_ref.double() - e_alt.double()).norm(dim=-1)
            emb_dist = torch.where(ok, d, emb_dist)
            if self.opts.keep_embeddings:
                nan = torch.full_like(e_ref, float("nan"))
                out["emb_ref"] = torch.where(ok[:, None], e_ref, nan)
                out["emb_alt"] = torch.where(ok[:, None], e_alt, nan)
        if self.opts.keep_embeddings and "emb_ref" not in out:  # no allele of this batch has embeddings: NaN rows
            out["emb_ref"] = out["emb_alt"] = torch.full((n, self.model.embed_dim), float("nan"), device=device)
        out["emb_dist"] = emb_dist
        return out


def __getattr__(name: str):
    if name == "score_variants":  # its old home; the keyword API of the workflow lives with it now
        import warnings

        from genossm.workflows import load_workflow

        warnings.warn("genossm.tasks.variants.score_variants moved to the score-variants workflow: "
                      "genossm.cli.load_workflow('score-variants').score_variants", DeprecationWarning, stacklevel=2)
        return load_workflow("score-variants").score_variants
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
