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


# Direction of each ETDRS quadrant's axis on the retina (radians): x nasal, y superior.
QUADRANT_AXES_RAD = {"superior": math.pi / 2, "nasal": 0.0, "inferior": -math.pi / 2, "temporal": math.pi}


def quadrant_weights(
    x_nasal_mm: np.ndarray, y_superior_mm: np.ndarray | float, blend_deg: float
) -> dict[str, np.ndarray]:
    """Share of each ETDRS quadrant at retinal positions (x towards the nasal side, y superior, mm from the fovea).

    1 within 45 - `blend_deg`/2 degrees of the quadrant's axis, a raised-cosine hand-over to the neighbouring
    quadrant across the diagonals, 0 beyond; the four shares sum to 1. On the horizontal line through the fovea the
    nasal and temporal shares are exactly 1.
    """
    if not 0.0 < blend_deg <= 90.0:
        raise ValueError(f"quadrant blend of {blend_deg} degrees: expected a value in (0, 90]")
    theta = np.arctan2(np.broadcast_to(y_superior_mm, np.shape(x_nasal_mm)), x_nasal_mm)
    blend = math.radians(blend_deg)
    start = math.pi / 4 - blend / 2
    weights = {}
    for quadrant in ETDRS_QUADRANTS:
        distance = np.abs((theta - QUADRANT_AXES_RAD[quadrant] + math.pi) % (2 * math.pi) - math.pi)
        share = np.clip((distance - start) / blend, 0.0, 1.0)
        weights[quadrant] = 0.5 * (1.0 + np.cos(math.pi * share))
    return weights


def rnfl_quadrant_offset_um(
    offsets: dict[str, tuple[float, float]], r_mm: np.ndarray, weights: dict[str, np.ndarray], r_max_mm: float
) -> np.ndarray:
    """The RNFL's quadrant offset at eccentricities `r_mm`: 0 at the fovea, linear to each quadrant's (inner, outer)
    offset at the ring mid-eccentricities, flat beyond; quadrants mixed by `weights` (see `quadrant_weights`)."""
    knots = [0.0, INNER_RING_MID_MM, OUTER_RING_MID_MM, max(r_max_mm, OUTER_RING_MID_MM + 1e-3)]
    total = np.zeros_like(r_mm)
    for quadrant in ETDRS_QUADRANTS:
        inner, outer = offsets[quadrant]
        total = total + weights[quadrant] * np.interp(r_mm, knots, [0.0, inner, outer, outer])
    return total


def macular_thickness_map_um(
    layers: dict[str, np.ndarray],
    offsets: dict[str, tuple[float, float]],
    x_nasal_mm: np.ndarray,
    y_superior_mm: np.ndarray | float,
    pit_sigma_mm: float,
    blend_deg: float,
) -> np.ndarray:
    """ILM-to-Bruch's thickness (um, without lesions) of an eye's latent anatomy at retinal positions: the radial
    foveal profile of every retinal layer plus the RNFL's quadrant offset. At a ring's mid-eccentricity inside a
    quadrant it is the table's ETDRS subfield value (`sampling.oct_columns`)."""
    x = np.asarray(x_nasal_mm, dtype=np.float64)
    r = np.hypot(x, y_superior_mm)
    weights = quadrant_weights(x, y_superior_mm, blend_deg)
    rnfl = foveal_profile(layers["rnfl"], r, pit_sigma_mm) + rnfl_quadrant_offset_um(
        offsets, r, weights, float(r.max())
    )
    others = sum(
        foveal_profile(values, r, pit_sigma_mm) for name, values in layers.items() if name not in ("rnfl", "choroid")
    )
    return np.maximum(rnfl, 0.0) + others
