"""Macular geometry shared by the sampler and the OCT renderer: the ETDRS grid and the foveal thickness profile."""

from __future__ import annotations

import math

import numpy as np

# ETDRS grid radii (mm): central subfield < 0.5, inner ring 0.5-1.5, outer ring 1.5-3.0 (Early Treatment Diabetic
# Retinopathy Study grid, the layout of UK Biobank's OCT-derived macular measures).
ETDRS_RADII_MM = (0.5, 1.5, 3.0)
INNER_RING_MID_MM = (ETDRS_RADII_MM[0] + ETDRS_RADII_MM[1]) / 2  # 1.0 mm
OUTER_RING_MID_MM = (ETDRS_RADII_MM[1] + ETDRS_RADII_MM[2]) / 2  # 2.25 mm
ETDRS_QUADRANTS = ("superior", "nasal", "inferior", "temporal")


def etdrs_area_weights() -> np.ndarray:
    """Area fractions of the (central, inner ring, outer ring) zones of the 6 mm ETDRS grid."""
    c, i, o = ETDRS_RADII_MM
    areas = np.array([c**2, i**2 - c**2, o**2 - i**2])
    return areas / areas.sum()


def foveal_profile(values: np.ndarray, r_mm: np.ndarray, pit_sigma_mm: float) -> np.ndarray:
    """Thickness at eccentricities `r_mm` of layers given as [..., (fovea, inner, outer)] values.

    A Gaussian foveal pit from the foveal value to the inner-ring value (reached at 1 mm), then linear to the outer-ring
    value at 2.25 mm, continuing with half that slope to the edge of the scan. Returns [..., len(r_mm)].
    """
    values = np.asarray(values, dtype=np.float64)
    fovea, inner, outer = values[..., 0:1], values[..., 1:2], values[..., 2:3]
    r = np.abs(np.asarray(r_mm, dtype=np.float64))
    pit = inner - (inner - fovea) * np.exp(-((r / pit_sigma_mm) ** 2))
    slope = (outer - inner) / (OUTER_RING_MID_MM - INNER_RING_MID_MM)
    ring = inner + slope * (r - INNER_RING_MID_MM)
    edge = outer + 0.5 * slope * (r - OUTER_RING_MID_MM)
    return np.where(r <= INNER_RING_MID_MM, pit, np.where(r <= OUTER_RING_MID_MM, ring, edge))


def central_subfield_mean(values: np.ndarray, pit_sigma_mm: float) -> np.ndarray:
    """Area mean of the foveal profile over the central subfield (r < 0.5 mm), in closed form."""
    values = np.asarray(values, dtype=np.float64)
    fovea, inner = values[..., 0], values[..., 1]
    radius = ETDRS_RADII_MM[0]
    pit_share = pit_sigma_mm**2 * (1 - math.exp(-((radius / pit_sigma_mm) ** 2))) / radius**2
    return inner - (inner - fovea) * pit_share
