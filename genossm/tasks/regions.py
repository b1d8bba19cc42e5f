"""Region-level LightningModules on a pretrained backbone, all on the pooled reverse-complement-invariant embedding.

* :class:`RegionModel`: backbone + linear head. ``method="finetune"`` trains everything, ``method="head"`` freezes
  the backbone; ``predict_step`` gives the head's logits per region (``genossm score-regions``).
* :class:`RegionEmbedder`: ``predict_step`` gives the embedding per region (``genossm embed``).
* :func:`embed_regions`: the frozen embeddings the linear probe is fitted on
  (:func:`genossm.tasks.baselines.fit_linear`), folded into the same linear head format.

Every embedding is the backbone's :meth:`genossm.models.BiMambaLM.embed` with ``rc_invariant=True`` (the same for
a sequence and its reverse complement).

The save format of a region model is :func:`genossm.models.save_region_model`'s.
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn as nn

from genossm.deprecation import renamed_keywords
from genossm.errors import GenossmError
from genossm.tasks.metrics import compute_metrics, output_scores, task_loss


# --------------------------------------------------------------------------------------------- features


@torch.no_grad()
def embed_regions(backbone: nn.Module, tokens: torch.Tensor, valid: torch.Tensor, pooling: str = "mean", batch_size: int = 64) -> torch.Tensor:
    """RC-invariant embeddings (N, H) of every row, in order, with the backbone in eval mode."""
    was_training = backbone.training
    backbone.eval()
    device = next(backbone.parameters()).device
    out = []
    for i in range(0, len(tokens), batch_size):
        t = tokens[i : i + batch_size].to(device)
        v = valid[i : i + batch_size].to(device)
        out.append(backbone.embed(t, pooling=pooling, valid=v, rc_invariant=True).float().cpu())
    backbone.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, 0)


def embedding_dim(backbone: nn.Module, pooling: str = "mean") -> int:
    if hasattr(backbone, "embed_dim"):
        return int(backbone.embed_dim)
    with torch.no_grad():
        was_training = backbone.training
        backbone.eval()
        device = next(backbone.parameters()).device
        dim = backbone.embed(torch.zeros(1, 8, dtype=torch.long, device=device), pooling=pooling).shape[-1]
        backbone.train(was_training)
    return int(dim)


# --------------------------------------------------------------------------------------------- lightning


class RegionModel(L.LightningModule):
    """Backbone + linear head on the pooled RC-invariant embedding; binary, multi-class or regression.

    ``label_type`` (binary, multiclass, regression) and ``method`` (finetune, head) are the ``finetune``
    command's keys; the old keywords ``task=`` and ``mode=`` are still accepted with a DeprecationWarning."""

    @renamed_keywords(task="label_type", mode="method")
    def __init__(
        self,
        backbone: nn.Module,
        label_type: str,
        n_outputs: int,
        method: str = "finetune",
        pooling: str = "mean",
        lr: float = 1e-3,
        backbone_lr: float | None = None,
        weight_decay: float = 0.01,
        class_weights: list[float] | None = None,
        dropout: float = 0.0,
    ):
        super().__init__()
        if method not in ("finetune", "head"):
            raise GenossmError(f"RegionModel method must be finetune or head (the probe is fitted separately), got {method!r}")
        # the saved hyperparameters (the run's logs/hparams.yaml, the checkpoint) keep their old key names
        self.save_hyperparameters(dict(task=label_type, n_outputs=n_outputs, mode=method, pooling=pooling, lr=lr,
                                       backbone_lr=backbone_lr, weight_decay=weight_decay, class_weights=class_weights,
                                       dropout=dropout))
        self._hparams_name = "kwargs"  # as Lightning records the keyword form, so the checkpoint is the same too
        self.backbone = backbone
        self.head = nn.Linear(embedding_dim(backbone, pooling), n_outputs)
        self.dropout = nn.Dropout(dropout)
        self.label_type, self.method, self.pooling = label_type, method, pooling
        self.register_buffer("class_weights", None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32))
        if method == "head":
            self.backbone.requires_grad_(False)
        self.backbone.train(method == "finetune")  # Lightning keeps the modes it finds at fit start
        self._val_outputs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def train(self, mode: bool = True):
        super().train(mode)
        if self.method == "head":
            self.backbone.eval()  # frozen: no dropout, no running statistics
        return self

    def forward(self, tokens: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        if self.method == "head":
            with torch.no_grad():
                emb = self.backbone.embed(tokens, pooling=self.pooling, valid=valid, rc_invariant=True)
        else:
            emb = self.backbone.embed(tokens, pooling=self.pooling, valid=valid, rc_invariant=True)
        return self.head(self.dropout(emb.float()))

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return task_loss(logits, y, self.label_type, self.class_weights)

    def training_step(self, batch, batch_idx):
        loss = self.loss(self(batch["tokens"], batch["valid"]), batch["y"])
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["y"]))
        return loss

    def validation_step(self, batch, batch_idx):
        logits = self(batch["tokens"], batch["valid"])
        self._val_outputs.append((logits.detach().float().cpu(), batch["y"].detach().cpu()))

    def on_validation_epoch_end(self):
        if not self._val_outputs:
            return
        logits = torch.cat([o[0] for o in self._val_outputs])
        y = torch.cat([o[1] for o in self._val_outputs])
        self._val_outputs.clear()
        # unweighted loss on val: the early-stopping signal
        w, self.class_weights = self.class_weights, None
        self.log("val/loss", self.loss(logits, y), prog_bar=True)
        self.class_weights = w
        metrics = compute_metrics(self.label_type, output_scores(logits, self.label_type), y, logits.shape[-1])
        for key in ("auroc", "auprc", "pearson"):
            if metrics.get(key) is not None:
                self.log(f"val/{key}", float(metrics[key]))

    def configure_optimizers(self):
        head_params = list(self.head.parameters())
        groups = [{"params": head_params, "lr": self.hparams.lr}]
        if self.method == "finetune":
            groups.append({"params": list(self.backbone.parameters()), "lr": self.hparams.backbone_lr or self.hparams.lr})
        return torch.optim.AdamW(groups, weight_decay=self.hparams.weight_decay)

    def predict_step(self, batch, batch_idx: int = 0, dataloader_idx: int = 0) -> dict:
        emb = self.backbone.embed(batch["tokens"], pooling=self.pooling, valid=batch["valid"], rc_invariant=True)
        return {"row": batch["row"], "logits": self.head(emb.float()).float()}

    @torch.no_grad()
    def predict_logits(self, tokens: torch.Tensor, valid: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        emb = embed_regions(self.backbone, tokens, valid, self.pooling, batch_size)
        return self.head(emb.to(self.head.weight.device)).float().cpu()


class RegionEmbedder(L.LightningModule):
    """``predict_step``: the pooled reverse-complement-invariant embedding of each region of the batch."""

    def __init__(self, backbone: nn.Module, pooling: str = "mean"):
        super().__init__()
        self.backbone = backbone
        self.pooling = pooling

    def predict_step(self, batch, batch_idx: int = 0, dataloader_idx: int = 0) -> dict:
        emb = self.backbone.embed(batch["tokens"], pooling=self.pooling, valid=batch["valid"], rc_invariant=True)
        return {"row": batch["row"], "embedding": emb.float()}
