"""Percentile bootstrap confidence intervals over reports for the headline metrics."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

Statistic = Callable[[np.ndarray], float]


def bootstrap_ci(
    statistics: Mapping[str, Statistic], n: int, resamples: int = 1000, level: float = 0.95, seed: int = 0
) -> dict[str, tuple[float, float]]:
    """(low, high) percentile interval of each statistic, each computed on the same resampled report indices.

    A statistic takes an index array (reports drawn with replacement) and returns a number."""
    if n == 0 or resamples <= 0:
        return {}
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(resamples, n))
    values = {name: np.array([statistic(index) for index in draws]) for name, statistic in statistics.items()}
    alpha = (1 - level) / 2
    return {name: (float(np.quantile(v, alpha)), float(np.quantile(v, 1 - alpha))) for name, v in values.items()}
