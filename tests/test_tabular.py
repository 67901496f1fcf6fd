"""Tabular encoders: feature selection, training-split standardisation, missing masks, SCARF corruption."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from grok.models.tabular import (
    BiomarkerEncoder,
    PaperTabularEncoder,
    TabularPreprocessor,
    resolve_features,
    scarf_corrupt,
)
from grok.schema import load_schema

SPEC = {"modalities": ["oct"], "include": ["sex"]}


def _table(rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    features = resolve_features(SPEC)
    table = pd.DataFrame({name: rng.normal(300, 20, rows) for name in features.numeric})
    table.loc[0, features.numeric[0]] = np.nan
    table["sex"] = rng.choice(["F", "M"], rows)
    return table


def test_feature_selection_follows_the_schema() -> None:
    features = resolve_features(SPEC)
    assert list(features.numeric) == load_schema().oct_biomarkers and len(features.numeric) == 31
    assert features.categorical == (("sex", ("F", "M")),)
    with pytest.raises(KeyError, match="not_a_column"):
        resolve_features({"modalities": ["oct"], "include": ["not_a_column"]})


def test_standardisation_uses_training_statistics_and_keeps_missing_values_missing() -> None:
    train, other = _table(200), _table(50, seed=1)
    preprocessor = TabularPreprocessor(resolve_features(SPEC)).fit(train)
    arrays = preprocessor.transform(train)
    assert np.nanmean(arrays["numeric"], axis=0) == pytest.approx(0, abs=1e-5)
    assert arrays["missing"][0, 0] and np.isnan(arrays["numeric"][0, 0]) and arrays["missing"].sum() == 1
    shifted = other.assign(**{name: other[name] + 100 for name in preprocessor.features.numeric})
    assert np.nanmean(preprocessor.transform(shifted)["numeric"]) > 3  # val statistics never leak into the fit
    codes = preprocessor.transform(train.assign(sex=["F", "M", None, "X"] * 50))["categorical"][:4, 0]
    assert codes.tolist() == [0, 1, -1, -1]


@pytest.mark.parametrize("rate", [0.2, 0.5])
def test_scarf_corrupts_the_configured_fraction_with_marginal_draws(rate: float) -> None:
    torch.manual_seed(0)
    rows, n_numeric = 400, 30
    numeric = torch.full((rows, n_numeric), -1.0)  # a value the bank never holds
    categorical = torch.full((rows, 2), 5)
    bank_numeric = torch.arange(50 * n_numeric, dtype=torch.float32).reshape(50, n_numeric)
    bank_categorical = torch.randint(0, 3, (50, 2))
    corrupted, corrupted_codes = scarf_corrupt(numeric, categorical, bank_numeric, bank_categorical, rate)
    changed = torch.cat([corrupted != numeric, corrupted_codes != categorical], dim=1)
    assert changed.float().mean().item() == pytest.approx(rate, abs=0.02)
    column = 7  # a replaced value comes from the same column of some training row
    replaced = corrupted[:, column][changed[:, column]]
    assert bool(((replaced - column) % n_numeric == 0).all())
    single, no_codes = scarf_corrupt(numeric[0], categorical[0, :0], bank_numeric, bank_categorical[:, :0], rate)
    assert single.shape == (n_numeric,) and no_codes.shape == (0,)


def test_our_encoder_sees_the_missing_mask_and_categories() -> None:
    torch.manual_seed(0)
    encoder = BiomarkerEncoder(SPEC, hidden_dims=(16,), out_dim=8, dropout=0.0).eval()
    numeric, categorical = torch.zeros(2, 31), torch.tensor([[0], [0]])
    missing = torch.zeros(2, 31, dtype=torch.bool)
    missing[1, 3] = True  # same (zero) value, but declared missing
    out = encoder(numeric.masked_fill(missing, float("nan")), missing, categorical)
    assert out.shape == (2, 8) and torch.isfinite(out).all() and not torch.allclose(out[0], out[1])
    embedded = BiomarkerEncoder(SPEC, hidden_dims=(16,), out_dim=8, categorical="embedding", norm="batch")
    assert embedded(numeric, missing, torch.tensor([[1], [-1]])).shape == (2, 8)
    assert isinstance(embedded.mlp[1], torch.nn.BatchNorm1d)


def test_paper_encoder_adds_one_mask_token_to_rows_with_missing_values() -> None:
    torch.manual_seed(0)
    encoder = PaperTabularEncoder({"modalities": ["oct"]})
    assert [m.out_features for m in encoder.mlp if isinstance(m, torch.nn.Linear)] == [128, 1024]
    assert not encoder.mlp[1].affine
    encoder.train()
    numeric = torch.randn(8, 31)
    missing = torch.zeros(8, 31, dtype=torch.bool)
    missing[0, 5] = True
    out = encoder(numeric.masked_fill(missing, float("nan")), missing, torch.zeros(8, 0, dtype=torch.long))
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert encoder.mask_token.grad is not None and encoder.mask_token.grad.abs().sum() > 0
