"""Linear models in plain torch: the k-mer baseline and the linear probe on frozen embeddings.

The k-mer baseline turns each region into its k-mer frequency vector (k-mers containing N or padding are
skipped) and fits an L2-regularised logistic regression (binary: sigmoid, multi-class: softmax) or a
ridge regression. The same :func:`fit_linear` fits the linear probe on cached model embeddings, so the
two are directly comparable. The regularisation strength is chosen on the validation split only.

Features are standardised with the training mean and standard deviation; :meth:`LinearModel.folded`
folds that into one ``nn.Linear`` so a probe can be saved and applied like any other head.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from genossm.data.tokenizer import NUM_BASES

DEFAULT_L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)


def kmer_features(tokens: torch.Tensor, valid: torch.Tensor | None, k: int, canonical: bool = False) -> torch.Tensor:
    """(N, L) token ids -> (N, 4**k) k-mer frequencies over the k-mers made only of valid A/C/G/T.

    ``canonical`` adds each k-mer's reverse complement counts (strand-symmetric features).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    tokens = tokens.long()
    n, length = tokens.shape
    counts = torch.zeros(n, NUM_BASES**k, dtype=torch.float64)
    if length < k:
        return counts.float()
    ok = tokens < NUM_BASES
    if valid is not None:
        ok &= valid.bool()
    windows = tokens.unfold(1, k, 1).clamp(max=NUM_BASES - 1)  # (N, L-k+1, k)
    powers = NUM_BASES ** torch.arange(k - 1, -1, -1)
    index = (windows * powers).sum(-1)  # (N, L-k+1) base-4 number of each k-mer
    keep = ok.unfold(1, k, 1).all(-1)
    counts.scatter_add_(1, index, keep.to(torch.float64))
    if canonical:
        rc_index = ((NUM_BASES - 1 - windows).flip(-1) * powers).sum(-1)
        counts.scatter_add_(1, rc_index, keep.to(torch.float64))
    return (counts / counts.sum(1, keepdim=True).clamp(min=1)).float()


def class_weights(y: torch.Tensor, task: str, n_classes: int) -> torch.Tensor | None:
    """Inverse-frequency weights (mean 1 over the examples) for ``binary``/``multiclass``; None for regression."""
    if task == "regression":
        return None
    counts = torch.bincount(y.long(), minlength=n_classes).double().clamp(min=1)
    return (len(y) / (n_classes * counts)).float()


@dataclass
class LinearModel:
    task: str  # binary | multiclass | regression
    mean: torch.Tensor  # (F,)
    std: torch.Tensor  # (F,)
    weight: torch.Tensor  # (n_out, F) on standardised features
    bias: torch.Tensor  # (n_out,)
    l2: float

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        z = (x.double() - self.mean) / self.std
        return (z @ self.weight.T + self.bias).float()

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Binary: P(class 1) (N,); multi-class: probabilities (N, C); regression: values (N,)."""
        return output_scores(self.logits(x), self.task)

    def folded(self) -> nn.Linear:
        """An nn.Linear on raw features equal to :meth:`logits`."""
        w = self.weight / self.std
        b = self.bias - (w * self.mean).sum(1)
        layer = nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            layer.weight.copy_(w.float())
            layer.bias.copy_(b.float())
        return layer


def output_scores(logits: torch.Tensor, task: str) -> torch.Tensor:
    """Head outputs (N, n_out) -> scores: P(class 1) (N,), class probabilities (N, C) or values (N,)."""
    if task == "binary":
        return torch.sigmoid(logits[:, 0])
    if task == "multiclass":
        return torch.softmax(logits, dim=-1)
    return logits[:, 0]


def _loss(logits: torch.Tensor, y: torch.Tensor, task: str, weights: torch.Tensor | None) -> torch.Tensor:
    if task == "binary":
        pos_weight = None if weights is None else weights[1] / weights[0]
        return F.binary_cross_entropy_with_logits(logits[:, 0], y.to(logits.dtype), pos_weight=pos_weight)
    if task == "multiclass":
        return F.cross_entropy(logits, y.long(), weight=None if weights is None else weights.to(logits.dtype))
    return F.mse_loss(logits[:, 0], y.to(logits.dtype))


def _fit_one(z: torch.Tensor, y: torch.Tensor, task: str, n_out: int, l2: float, weights, max_iter: int):
    n, f = z.shape
    if task == "regression":
        # ridge, closed form on centred targets: (Z'Z + n*l2*I) w = Z'(y - mean)
        y_mean = y.double().mean()
        a = z.T @ z + n * l2 * torch.eye(f, dtype=z.dtype)
        w = torch.linalg.solve(a, z.T @ (y.double() - y_mean))
        return w.unsqueeze(0), y_mean.reshape(1)
    weight = torch.zeros(n_out, f, dtype=z.dtype, requires_grad=True)
    bias = torch.zeros(n_out, dtype=z.dtype, requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe")
    w_cls = None if weights is None else weights.double()

    def closure():
        opt.zero_grad()
        loss = _loss(z @ weight.T + bias, y, task, w_cls) + l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return weight.detach(), bias.detach()


def fit_linear(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    task: str,
    n_classes: int = 2,
    x_val: torch.Tensor | None = None,
    y_val: torch.Tensor | None = None,
    l2_grid=DEFAULT_L2_GRID,
    balance: bool = True,
    max_iter: int = 200,
) -> LinearModel:
    """Fit a logistic (binary/multiclass) or ridge (regression) model; pick L2 by validation loss.

    ``balance`` weights classes inversely to their training frequency. Without a validation split the
    middle of ``l2_grid`` is used.
    """
    x = x_train.double()
    mean = x.mean(0)
    std = x.std(0, unbiased=False).clamp(min=1e-6)
    z = (x - mean) / std
    n_out = n_classes if task == "multiclass" else 1
    weights = class_weights(y_train, task, n_classes) if balance else None
    grid = list(l2_grid)
    if x_val is None or y_val is None or len(y_val) == 0:
        grid = [grid[len(grid) // 2]]
    best = None
    for l2 in grid:
        w, b = _fit_one(z, y_train, task, n_out, float(l2), weights, max_iter)
        model = LinearModel(task, mean, std, w, b, float(l2))
        if len(grid) == 1:
            return model
        with torch.no_grad():
            val_loss = float(_loss(model.logits(x_val).double(), y_val, task, None))
        if best is None or val_loss < best[0]:
            best = (val_loss, model)
    return best[1]


def kmer_baseline(
    tokens: torch.Tensor,
    valid: torch.Tensor,
    y: torch.Tensor,
    splits,
    task: str,
    n_classes: int = 2,
    k: int = 4,
    canonical: bool = False,
    balance: bool = True,
) -> tuple[LinearModel, torch.Tensor]:
    """Fit on the train split (L2 chosen on val); return the model and its scores for every region."""
    import numpy as np

    splits = np.asarray(splits)
    feats = kmer_features(tokens, valid, k, canonical)
    train = torch.from_numpy(splits == "train")
    val = torch.from_numpy(splits == "val")
    model = fit_linear(feats[train], y[train], task, n_classes, feats[val], y[val], balance=balance)
    return model, model.predict(feats)


__all__ = [
    "kmer_features",
    "fit_linear",
    "LinearModel",
    "kmer_baseline",
    "class_weights",
    "output_scores",
]
