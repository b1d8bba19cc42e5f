"""Masked-language-model pretraining of a BiMamba model on genome windows (a LightningModule).

Objective (bidirectional models, BERT style): in every window, each A/C/G/T base at a real position
(``valid``) is chosen as a target with probability ``mask_prob`` (15 %). A chosen base is replaced by
<mask> (80 %), by a random base (10 %) or left as it is (10 %); the loss is the cross-entropy of the
model's A/C/G/T logits at the chosen positions. N and padding are never chosen. Soft-masked (lowercase,
usually repeat) targets can weigh less in the training loss (``softmask_weight`` < 1).

Causal models (``bidirectional: false``) are trained on next-base prediction at every position whose
next base is a real A/C/G/T; no masking.

Validation and test measure the model, not the objective's tricks: every chosen position becomes <mask>
(``eval_mask_all``; a left-unchanged target would show the model its answer) and the masks are drawn
from a generator keyed by the batch index, so every validation pass scores the same positions. Metrics
(per stage ``val/`` and ``test/``): ``loss`` (weighted as in training), ``nll`` (nats per base,
unweighted), ``bpb`` (bits per base = nll / ln 2), ``ppl`` (exp nll), ``acc`` (arg-max accuracy).

The masking RNG is a generator seeded from (seed, stage, global step, batch index, rank), so a run
resumed from a checkpoint draws exactly the masks the uninterrupted run would have drawn, and each
rank masks differently.

Optimiser: AdamW (no weight decay on biases, norms and the 1-D SSM parameters) with linear warm-up then
cosine decay to ``min_lr_ratio * lr`` at the last step.

Sequence-length warm-up (HyenaDNA style) is the data module's (``data.window_len_warmup``).
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, Mapping

import lightning as L
import torch
import torch.nn as nn
import torch.nn.functional as F

from genossm.data.tokenizer import MASK, NUM_BASES
from genossm.errors import GenossmError
from genossm.models.hub import write_checkpoint_block
from genossm.tasks.metrics import LN2, BitsPerBase


def make_generator(device: torch.device, *key: Any) -> torch.Generator:
    """A torch generator on ``device`` seeded by a stable hash of ``key`` (ints and strings)."""
    digest = hashlib.blake2b(repr(tuple(key)).encode(), digest_size=8).digest()
    gen = torch.Generator(device=device)
    gen.manual_seed(int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF)
    return gen


def choose_targets(tokens: torch.Tensor, valid: torch.Tensor | None, mask_prob: float, generator: torch.Generator) -> torch.Tensor:
    """Bool (B, L): the positions the model must predict; only real A/C/G/T bases can be chosen."""
    eligible = tokens < NUM_BASES
    if valid is not None:
        eligible &= valid
    draw = torch.rand(tokens.shape, generator=generator, device=tokens.device)
    return eligible & (draw < mask_prob)


def corrupt(tokens: torch.Tensor, targets: torch.Tensor, generator: torch.Generator,
            mask_token_frac: float = 0.8, random_token_frac: float = 0.1) -> torch.Tensor:
    """The model's input: chosen targets -> <mask> (mask_token_frac), a random base (random_token_frac), else unchanged."""
    draw = torch.rand(tokens.shape, generator=generator, device=tokens.device)
    random_bases = torch.randint(0, NUM_BASES, tokens.shape, generator=generator, device=tokens.device)
    inputs = tokens.clone()
    to_mask = targets & (draw < mask_token_frac)
    to_random = targets & (draw >= mask_token_frac) & (draw < mask_token_frac + random_token_frac)
    inputs[to_mask] = MASK
    inputs[to_random] = random_bases[to_random]
    return inputs


class MaskedLM(L.LightningModule):
    """Masked-LM (or next-base, for causal configs) pretraining of :class:`genossm.models.BiMambaLM`."""

    def __init__(
        self,
        model_config: Mapping,
        lr: float = 2e-3,
        weight_decay: float = 0.1,
        betas: tuple[float, float] = (0.9, 0.95),
        warmup_steps: int = 100,
        min_lr_ratio: float = 0.1,
        max_steps: int | None = None,
        mask_prob: float = 0.15,
        mask_token_frac: float = 0.8,
        random_token_frac: float = 0.1,
        softmask_weight: float = 1.0,
        eval_mask_all: bool = True,
        seed: int = 0,
        extra: Mapping | None = None,
        model: nn.Module | None = None,
    ):
        super().__init__()
        model_config = dict(model_config)
        if not 0.0 < mask_prob < 1.0:
            raise GenossmError(f"task.mask_prob must be between 0 and 1, got {mask_prob}")
        if mask_token_frac < 0 or random_token_frac < 0 or mask_token_frac + random_token_frac > 1:
            raise GenossmError("task.mask_token_frac + task.random_token_frac must be within [0, 1]")
        if not 0.0 <= softmask_weight:
            raise GenossmError(f"task.softmask_weight must be >= 0, got {softmask_weight}")
        self.save_hyperparameters(ignore=["model"])
        if model is None:
            from genossm.models import BiMambaLM

            model = BiMambaLM(model_config)
        self.model = model
        cfg = getattr(model, "config", None)
        self.causal = not getattr(cfg, "bidirectional", model_config.get("bidirectional", True))
        self.metrics = nn.ModuleDict({"val": BitsPerBase(), "test": BitsPerBase()})

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Every checkpoint carries the model's block in the format :mod:`genossm.models.hub` reads back
        (``from_pretrained("run/checkpoints/last.ckpt")``), written by hub's own function."""
        write_checkpoint_block(checkpoint, self.hparams["model_config"], self.hparams.get("extra"))

    # ---- the objective ---------------------------------------------------------------------------------
    def mask_batch(self, batch: Mapping, stage: str, batch_idx: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(model input (B, L), targets bool (B, L), labels (B, L)) for one batch.

        For causal models the targets at t are the bases at t + 1 (labels shifted accordingly)."""
        tokens = batch["tokens"]
        valid = batch.get("valid")
        if self.causal:
            labels = torch.roll(tokens, -1, dims=1)
            targets = labels < NUM_BASES
            if valid is not None:
                targets &= torch.roll(valid, -1, dims=1) & valid
            targets[:, -1] = False
            return tokens, targets, labels
        hp = self.hparams
        step = self.global_step if stage == "train" else 0
        key = int(batch.get("mask_index", batch_idx))  # a batch may name its own (several evaluation passes)
        gen = make_generator(tokens.device, int(hp.seed), stage, int(step), key, int(self.global_rank))
        targets = choose_targets(tokens, valid, hp.mask_prob, gen)
        if stage == "train" or not hp.eval_mask_all:
            inputs = corrupt(tokens, targets, gen, hp.mask_token_frac, hp.random_token_frac)
        else:
            inputs = corrupt(tokens, targets, gen, 1.0, 0.0)
        return inputs, targets, tokens

    def shared_step(self, batch: Mapping, stage: str, batch_idx: int) -> dict[str, torch.Tensor]:
        inputs, targets, labels = self.mask_batch(batch, stage, batch_idx)
        logits = self.model(inputs)  # (B, L, 4)
        chosen_logits = logits[targets].float()  # (n, 4)
        chosen_labels = labels[targets].long()
        nll = F.cross_entropy(chosen_logits, chosen_labels, reduction="none")  # nats, (n,)
        weight = torch.ones_like(nll)
        softmask = batch.get("softmask")
        if softmask is not None and self.hparams.softmask_weight != 1.0:
            soft = torch.roll(softmask, -1, dims=1) if self.causal else softmask
            weight = torch.where(soft[targets], torch.full_like(nll, self.hparams.softmask_weight), weight)
        if nll.numel():
            loss = (nll * weight).sum() / weight.sum().clamp(min=1e-12)
        else:  # no base chosen (tiny or all-N window): a zero loss that still touches the graph
            loss = logits.sum() * 0.0
        correct = chosen_logits.argmax(-1) == chosen_labels
        return {"loss": loss, "nll": nll, "weight": weight, "correct": correct, "inputs": inputs, "targets": targets}

    def training_step(self, batch, batch_idx):
        out = self.shared_step(batch, "train", batch_idx)
        n = out["nll"].numel()
        bsz = batch["tokens"].shape[0]
        self.log("train/loss", out["loss"], prog_bar=True, batch_size=bsz)
        if n:
            self.log("train/bpb", out["nll"].mean() / LN2, prog_bar=True, batch_size=bsz)
        return out["loss"]

    def _eval_step(self, batch, batch_idx, stage):
        out = self.shared_step(batch, stage, batch_idx)
        window = out["targets"].nonzero(as_tuple=True)[0]  # the batch row of each scored base (row-major order)
        self.metrics[stage].update(out["nll"].detach(), out["weight"].detach(), out["correct"], window=window,
                                   n_windows=int(out["targets"].shape[0]))
        return out["loss"]

    def validation_step(self, batch, batch_idx):
        return self._eval_step(batch, batch_idx, "val")

    def test_step(self, batch, batch_idx):
        return self._eval_step(batch, batch_idx, "test")

    def _eval_epoch_end(self, stage):
        values = self.metrics[stage].compute()
        self.metrics[stage].reset()
        if self.trainer.sanity_checking:
            return
        # the metric states are already summed over DDP ranks (torchmetrics), so every rank holds the same values;
        # sync_dist keeps Lightning's epoch-level logging consistent across ranks (and quiet)
        self.log_dict({f"{stage}/{k}": v for k, v in values.items() if k != "bpb"}, prog_bar=False, sync_dist=True)
        self.log(f"{stage}/bpb", values["bpb"], prog_bar=True, sync_dist=True)

    def on_validation_epoch_end(self):
        self._eval_epoch_end("val")

    def on_test_epoch_end(self):
        self._eval_epoch_end("test")

    def on_train_epoch_start(self):
        dm = getattr(self.trainer, "datamodule", None)
        if getattr(dm, "window_len_warmup", None) is not None:  # the data module's sequence-length warm-up
            self.log("train/window_len", float(dm.window_len_at(self.current_epoch)))

    # ---- optimisation ---------------------------------------------------------------------------------
    def total_steps(self) -> int:
        if self.hparams.max_steps and self.hparams.max_steps > 0:
            return int(self.hparams.max_steps)
        est = self.trainer.estimated_stepping_batches
        return int(est) if math.isfinite(est) else 100_000

    def configure_optimizers(self):
        hp = self.hparams
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim < 2 or getattr(p, "_no_weight_decay", False) else decay).append(p)
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": hp.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=hp.lr, betas=tuple(hp.betas),
        )
        total, warmup, floor = self.total_steps(), int(hp.warmup_steps), float(hp.min_lr_ratio)

        def lr_lambda(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


# =====================================================================================================
# The run: what ``genossm pretrain`` does with a composed config (workflows/pretrain.py calls this).
# =====================================================================================================


def _full_model(trainer, module, model_config):
    """The trained model with every parameter on this process. Under FSDP the parameters are sharded over the
    ranks: gather the full state dict (a collective: every rank calls this; rank 0 receives it)."""
    if "FSDP" not in type(trainer.strategy).__name__:
        return module.model
    from genossm.models import BiMambaLM
    from genossm.models.hub import checkpoint_weights

    state = trainer.strategy.lightning_module_state_dict()
    if not trainer.is_global_zero:
        return None
    model = BiMambaLM(model_config)
    model.load_state_dict(checkpoint_weights(state))
    return model
