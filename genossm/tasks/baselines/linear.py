"""Linear models in plain torch, for the linear probe on frozen embeddings and the k-mer baseline.

:func:`fit_linear` fits an L2-regularised logistic regression (binary: sigmoid, multi-class: softmax) or a
ridge regression; the regularisation strength is chosen on the validation split only.

Features are standardised with the training mean and standard deviation; :meth:`LinearModel.folded`
folds that into one ``nn.Linear`` so a probe can be saved and applied like any other head.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from genossm.tasks.metrics import output_scores, task_loss

DEFAULT_L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)


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
        loss = task_loss(z @ weight.T + bias, y, task, w_cls) + l2 * weight.pow(2).sum()
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
            val_loss = float(task_loss(model.logits(x_val).double(), y_val, task, None))
        if best is None or val_loss < best[0]:
            best = (val_loss, model)
    return best[1]


__all__ = ["fit_linear", "LinearModel", "class_weights"]
