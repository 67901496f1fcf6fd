"""A closed-form read-out: ridge regression of each image-derived quantity on the frozen encoder's tokens.

The encoders are frozen, so their tokens do not change during training and the best linear read-out can be fitted
once, before the language model trains: every token of the image flattened and standardised, one ridge regression
per quantity, the regularisation chosen by leave-one-out cross-validation on the training eyes (scikit-learn's
`RidgeCV`). On SynthEye it beat the attention head trained beside the LM (experiments/mllm/README.md). The fitted
map is folded into one linear layer kept as buffers, so it is saved with the trainable weights and exported.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn


class RidgeReadout(nn.Module):
    """Standardised estimates [n, K] = flattened tokens [n, N * D] @ weight.T + bias, fitted by `fit`."""

    def __init__(self, num_tokens: int, token_dim: int, num_quantities: int) -> None:
        super().__init__()
        width = num_tokens * token_dim
        self.register_buffer("weight", torch.zeros(num_quantities, width))
        self.register_buffer("bias", torch.zeros(num_quantities))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    def forward(self, tokens: Tensor) -> Tensor:
        """[n, N, D] encoder tokens -> [n, K] standardised estimates (0, the training mean, before `fit`)."""
        flat = tokens.flatten(1).to(self.weight.dtype)
        return flat @ self.weight.T + self.bias

    @torch.no_grad()
    def fit(self, tokens: Tensor, targets: Tensor, alphas: Sequence[float]) -> None:
        """Fit on training images: `tokens` [n, N, D], standardised `targets` [n, K] (NaN where unknown); quantities
        known on the same images share one multi-target `RidgeCV` (a regularisation per quantity)."""
        weight, bias = ridge_maps(tokens.flatten(1).double().numpy(), targets.double().numpy(), alphas)
        self.weight.copy_(torch.from_numpy(weight))
        self.bias.copy_(torch.from_numpy(bias))
        self.fitted.fill_(True)


def ridge_maps(x: np.ndarray, y: np.ndarray, alphas: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """(weight [K, P], bias [K]) of the ridge fits of `y` [n, K] (NaN where unknown) on `x` [n, P], standardisation
    folded in; a quantity known on fewer than 3 rows keeps 0 (the training mean)."""
    from sklearn.linear_model import RidgeCV

    known = ~np.isnan(y)
    weight = np.zeros((y.shape[1], x.shape[1]))
    bias = np.zeros(y.shape[1])
    patterns: dict[bytes, list[int]] = {}
    for column in range(y.shape[1]):
        if known[:, column].sum() >= 3:
            patterns.setdefault(known[:, column].tobytes(), []).append(column)
    for columns in patterns.values():
        rows = known[:, columns[0]]
        mean, scale = x[rows].mean(0), x[rows].std(0)  # standardised on the images it is fitted on
        scale[scale < 1e-12] = 1.0
        standardised = (x[rows] - mean) / scale
        ridge = RidgeCV(alphas=list(alphas), alpha_per_target=True).fit(standardised, y[rows][:, columns])
        coef = np.atleast_2d(ridge.coef_)
        weight[columns] = coef / scale  # folded: z = ((x - mean) / scale) @ coef.T + b
        bias[columns] = np.atleast_1d(ridge.intercept_) - (mean / scale) @ coef.T
    return weight, bias


def out_of_fold_estimates(
    tokens: Tensor,
    targets: Tensor,
    alphas: Sequence[float],
    folds: int,
    groups: Sequence[str] | None = None,
    seed: int = 0,
) -> Tensor:
    """[n, K] standardised ridge estimates of each training image from a fit on the other folds (cross-fitting):
    what the read-out says of an image it was not fitted on, as at inference (in-sample estimates are too good).
    `groups` (e.g. subject ids) keeps a group's images in one fold."""
    x, y = tokens.flatten(1).double().numpy(), targets.double().numpy()
    estimates = np.zeros_like(y)
    labels = list(groups) if groups is not None else list(range(len(x)))
    distinct = sorted(set(labels), key=str)
    order = np.random.default_rng(seed).permutation(len(distinct))
    fold_of = {distinct[g]: rank % folds for rank, g in enumerate(order)}
    fold = np.array([fold_of[label] for label in labels])
    for held_fold in range(folds):
        held, kept = np.nonzero(fold == held_fold)[0], np.nonzero(fold != held_fold)[0]
        if not len(held) or not len(kept):
            continue
        weight, bias = ridge_maps(x[kept], y[kept], alphas)
        estimates[held] = x[held] @ weight.T + bias
    return torch.from_numpy(estimates)
