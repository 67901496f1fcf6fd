"""Encoders of the biomarker table: feature selection, training-split preprocessing, SCARF corruption, two MLPs.

`BiomarkerEncoder` (ours): standardised values, an explicit per-feature missing mask and one-hot or embedded
categories into a LayerNorm MLP. `PaperTabularEncoder` (GROK / Hager et al. 2023): 31 -> 128 -> 1024 MLP with a
non-affine BatchNorm, missing values set to 0 and one learned mask token added to any row with a missing value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from grok.schema import load_schema


@dataclass(frozen=True)
class TabularFeatures:
    """The table columns an encoder sees: numeric names, and categorical names with their category lists."""

    numeric: tuple[str, ...]
    categorical: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def category_sizes(self) -> list[int]:
        """Number of categories of each categorical feature."""
        return [len(categories) for _, categories in self.categorical]

    @property
    def names(self) -> list[str]:
        """All feature names, numeric first."""
        return [*self.numeric, *(name for name, _ in self.categorical)]


def resolve_features(spec: Mapping[str, Any] | TabularFeatures) -> TabularFeatures:
    """Features from a config mapping `{modalities: [oct], include: [...], exclude: [...]}` against the schema."""
    if isinstance(spec, TabularFeatures):
        return spec
    schema = load_schema()
    modalities = list(spec.get("modalities", ["oct"]) or [])
    names = [b.name for b in schema.by_modality(*modalities)] if modalities else []
    for name in spec.get("include", []) or []:
        if name not in schema.biomarkers:
            raise KeyError(f"data.features.include: '{name}' is not a schema biomarker column")
        if name not in names:
            names.append(name)
    excluded = set(spec.get("exclude", []) or [])
    names = [name for name in names if name not in excluded]
    if not names:
        raise ValueError(f"data.features {dict(spec)} selects no biomarker columns")
    numeric = tuple(n for n in names if schema.biomarkers[n].dtype != "category")
    categorical = tuple((n, schema.biomarkers[n].categories) for n in names if schema.biomarkers[n].dtype == "category")
    return TabularFeatures(numeric=numeric, categorical=categorical)


class TabularPreprocessor:
    """Per-feature standardisation fitted on the training split; missing values stay missing, flagged in a mask."""

    def __init__(self, features: TabularFeatures, standardise: bool = True) -> None:
        self.features = features
        self.standardise = standardise
        self.mean = np.zeros(len(features.numeric), dtype=np.float32)
        self.std = np.ones(len(features.numeric), dtype=np.float32)

    def fit(self, table: pd.DataFrame) -> TabularPreprocessor:
        """Learn mean and std of each numeric column from `table` (the training split), ignoring missing values."""
        self._check_columns(table)
        values = table[list(self.features.numeric)].to_numpy(dtype=np.float64)
        with np.errstate(all="ignore"):
            mean, std = np.nanmean(values, axis=0), np.nanstd(values, axis=0)
        self.mean = np.nan_to_num(mean, nan=0.0).astype(np.float32)
        self.std = np.where(np.isfinite(std) & (std > 0), std, 1.0).astype(np.float32)
        return self

    def transform(self, table: pd.DataFrame) -> dict[str, np.ndarray]:
        """`numeric` [n, F] float32 (standardised, NaN where missing), `missing` [n, F] bool, `categorical` [n, C]
        int64 (-1 where missing or unknown)."""
        self._check_columns(table)
        numeric = table[list(self.features.numeric)].to_numpy(dtype=np.float32)
        if self.standardise:
            numeric = (numeric - self.mean) / self.std
        codes = np.full((len(table), len(self.features.categorical)), -1, dtype=np.int64)
        for column, (name, categories) in enumerate(self.features.categorical):
            lookup = {category: index for index, category in enumerate(categories)}
            codes[:, column] = [lookup.get(value, -1) for value in table[name].astype(object)]
        return {"numeric": numeric, "missing": np.isnan(numeric), "categorical": codes}

    def state_dict(self) -> dict[str, Any]:
        """Fitted statistics (stored in Lightning checkpoints)."""
        return {"numeric": list(self.features.numeric), "mean": self.mean.tolist(), "std": self.std.tolist()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore fitted statistics; the feature list must match."""
        if list(state["numeric"]) != list(self.features.numeric):
            raise ValueError(f"preprocessor statistics are for columns {state['numeric']}, not {self.features.numeric}")
        self.mean = np.asarray(state["mean"], dtype=np.float32)
        self.std = np.asarray(state["std"], dtype=np.float32)

    def _check_columns(self, table: pd.DataFrame) -> None:
        absent = [name for name in self.features.names if name not in table.columns]
        if absent:
            raise KeyError(f"biomarker table lacks feature column(s) {absent}")


def scarf_corrupt(
    numeric: Tensor, categorical: Tensor, bank_numeric: Tensor, bank_categorical: Tensor, rate: float
) -> tuple[Tensor, Tensor]:
    """SCARF: in each row replace round(rate * n_features) randomly chosen features by the same feature of a random
    row of `bank_*` (the training split), i.e. a draw from the column's empirical marginal. Works on one row or a batch.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"data.corruption_rate must be in [0, 1], got {rate}")
    squeeze = numeric.dim() == 1
    if squeeze:
        numeric, categorical = numeric.unsqueeze(0), categorical.unsqueeze(0)
    rows, n_numeric = numeric.shape
    n_features = n_numeric + categorical.shape[1]
    n_corrupt = round(rate * n_features)
    if n_corrupt == 0 or rows == 0:
        return (numeric[0], categorical[0]) if squeeze else (numeric, categorical)
    chosen = torch.rand(rows, n_features).argsort(dim=1)[:, :n_corrupt]
    corrupt = torch.zeros(rows, n_features, dtype=torch.bool).scatter_(1, chosen, True)
    donors = torch.randint(0, bank_numeric.shape[0], (rows, n_features))
    features = torch.arange(n_features).expand(rows, -1)
    numeric = torch.where(corrupt[:, :n_numeric], bank_numeric[donors[:, :n_numeric], features[:, :n_numeric]], numeric)
    if categorical.shape[1]:
        donor_codes = bank_categorical[donors[:, n_numeric:], features[:, n_numeric:] - n_numeric]
        categorical = torch.where(corrupt[:, n_numeric:], donor_codes, categorical)
    return (numeric[0], categorical[0]) if squeeze else (numeric, categorical)


def _encode_categories(categorical: Tensor, sizes: Sequence[int], embeddings: nn.ModuleList | None) -> list[Tensor]:
    """One-hot (all zeros when missing) or learned embeddings (an extra 'missing' row) per categorical column."""
    parts = []
    for column, size in enumerate(sizes):
        codes = categorical[:, column]
        if embeddings is None:
            parts.append(F.one_hot(codes.clamp(min=0), size).float() * (codes >= 0).unsqueeze(1))
        else:
            parts.append(embeddings[column](torch.where(codes >= 0, codes, size)))
    return parts


class BiomarkerEncoder(nn.Module):
    """Our tabular encoder: [standardised values, missing mask, categories] -> normalised GELU MLP -> `out_dim`."""

    def __init__(
        self,
        features: Mapping[str, Any] | TabularFeatures,
        hidden_dims: Sequence[int] = (256, 256),
        out_dim: int = 256,
        categorical: str = "one_hot",
        embedding_dim: int = 4,
        dropout: float = 0.1,
        norm: str = "layer",
    ) -> None:
        super().__init__()
        self.features = resolve_features(features)
        if norm not in ("layer", "batch"):
            raise ValueError(f"tabular.encoder.norm must be 'layer' or 'batch', got {norm!r}")
        sizes = self.features.category_sizes
        if categorical not in ("one_hot", "embedding"):
            raise ValueError(f"tabular.encoder.categorical must be 'one_hot' or 'embedding', got {categorical!r}")
        self.embeddings = (
            nn.ModuleList(nn.Embedding(size + 1, embedding_dim) for size in sizes)
            if categorical == "embedding"
            else None
        )
        width = 2 * len(self.features.numeric) + (sum(sizes) if self.embeddings is None else embedding_dim * len(sizes))
        layers: list[nn.Module] = []
        for hidden in hidden_dims:
            normalise = nn.LayerNorm(hidden) if norm == "layer" else nn.BatchNorm1d(hidden)
            layers += [nn.Linear(width, hidden), normalise, nn.GELU(), nn.Dropout(dropout)]
            width = hidden
        layers.append(nn.Linear(width, out_dim))
        self.mlp = nn.Sequential(*layers)
        self.out_dim = out_dim

    def forward(self, numeric: Tensor, missing: Tensor, categorical: Tensor) -> Tensor:
        """[B, out_dim] from `numeric` [B, F] (NaN allowed where `missing`), `missing` [B, F], `categorical` [B, C]."""
        values = torch.where(missing, torch.zeros_like(numeric), numeric)
        parts = [
            values,
            missing.float(),
            *_encode_categories(categorical, self.features.category_sizes, self.embeddings),
        ]
        return self.mlp(torch.cat(parts, dim=1))


class PaperTabularEncoder(nn.Module):
    """The GROK paper's tabular encoder: Linear(F, 128) -> BatchNorm(affine=False) -> ReLU -> Linear(128, 1024).

    Missing values are set to 0 and one learned mask token (in input space) is added to every row that has any
    missing value; categorical columns, if selected, enter one-hot.
    """

    def __init__(self, features: Mapping[str, Any] | TabularFeatures, hidden_dim: int = 128, out_dim: int = 1024):
        super().__init__()
        self.features = resolve_features(features)
        width = len(self.features.numeric) + sum(self.features.category_sizes)
        self.mask_token = nn.Parameter(torch.zeros(width))
        nn.init.normal_(self.mask_token, std=1.0 / math.sqrt(width))
        self.mlp = nn.Sequential(
            nn.Linear(width, hidden_dim),
            nn.BatchNorm1d(hidden_dim, affine=False),
            nn.ReLU(),
            nn.Linear(hidden_dim, out_dim),
        )
        self.out_dim = out_dim

    def forward(self, numeric: Tensor, missing: Tensor, categorical: Tensor) -> Tensor:
        """[B, out_dim]; same inputs as BiomarkerEncoder."""
        values = torch.where(missing, torch.zeros_like(numeric), numeric)
        inputs = torch.cat([values, *_encode_categories(categorical, self.features.category_sizes, None)], dim=1)
        row_has_missing = (missing.any(dim=1) | (categorical < 0).any(dim=1)).unsqueeze(1)
        return self.mlp(inputs + row_has_missing * self.mask_token)
