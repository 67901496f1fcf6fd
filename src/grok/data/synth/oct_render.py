"""Render a horizontal foveal OCT B-scan whose layer bands have the eye's thicknesses at a declared axial scale."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter, gaussian_filter1d

from grok.data.synth.anatomy import INNER_RING_MID_MM, OUTER_RING_MID_MM, foveal_profile
from grok.data.synth.cfp_render import smooth_noise_field
from grok.data.synth.sampling import EyeAnatomy

# Bands from the ILM down to Bruch's membrane, in drawing order.
RETINAL_BANDS = (
    "rnfl", "gcl", "ipl", "inl", "opl", "onl", "elm", "inner_segments", "ellipsoid_zone", "outer_segments", "rpe",
    "drusen",
)  # fmt: skip


def scan_positions_mm(width: int, scan_width_mm: float) -> np.ndarray:
    """Lateral position (mm from the fovea) of each A-scan column; negative is the image's left."""
    return (np.arange(width) + 0.5) / width * scan_width_mm - scan_width_mm / 2


def nasal_sign(eye: str) -> int:
    """+1 when nasal retina is on the image's right (right eye, as in the CFP), -1 for the left eye."""
    return 1 if eye == "R" else -1


def _smooth_noise(rng: np.random.Generator, x: np.ndarray, n_waves: int = 4) -> np.ndarray:
    """Zero-mean smooth lateral variation with unit-ish amplitude (a few random sines)."""
    freqs = rng.uniform(0.6, 3.0, n_waves)
    phases = rng.uniform(0, 2 * np.pi, n_waves)
    return np.sin(np.outer(x, freqs) + phases).sum(axis=1) / np.sqrt(n_waves / 2)


def band_thicknesses_um(
    eye: EyeAnatomy, x_mm: np.ndarray, pit_sigma_mm: float, structure: Mapping[str, float], rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Thickness (um) of every retinal band and of the choroid at each lateral position of the scan."""
    r = np.abs(x_mm)
    profile = {name: foveal_profile(values, r, pit_sigma_mm) for name, values in eye.layers.items()}
    nasal = (x_mm * nasal_sign(eye.eye)) > 0
    knots = [0.0, INNER_RING_MID_MM, OUTER_RING_MID_MM, max(float(r.max()), OUTER_RING_MID_MM + 1e-3)]
    for quadrant, side in (("nasal", nasal), ("temporal", ~nasal)):
        inner, outer = eye.rnfl_quadrant_offsets[quadrant]
        profile["rnfl"] = np.where(
            side, profile["rnfl"] + np.interp(r, knots, [0.0, inner, outer, outer]), profile["rnfl"]
        )
    bands: dict[str, np.ndarray] = {"rnfl": np.maximum(profile["rnfl"], 0.0)}
    bands["gcl"] = structure["gcl_fraction"] * profile["gcipl"]
    bands["ipl"] = profile["gcipl"] - bands["gcl"]
    bands["inl"] = profile["inl"]
    bands["opl"] = structure["opl_fraction"] * profile["onl_opl"]
    bands["onl"] = profile["onl_opl"] - bands["opl"]
    bands["elm"] = np.minimum(structure["elm_line_um"], 0.3 * profile["elm_isos"])
    bands["inner_segments"] = profile["elm_isos"] - bands["elm"]
    bands["ellipsoid_zone"] = np.minimum(structure["ellipsoid_zone_um"], 0.4 * profile["isos_rpe"])
    bands["outer_segments"] = profile["isos_rpe"] - bands["ellipsoid_zone"]
    waviness = eye.rpe_irregularity_um * np.abs(_smooth_noise(rng, x_mm * 3.0))
    bands["rpe"] = profile["rpe"] + waviness
    drusen = np.zeros_like(x_mm)
    for height in eye.drusen_heights_um:
        centre, width = rng.uniform(-2.2, 2.2), rng.uniform(0.12, 0.3)
        drusen += height * np.exp(-(((x_mm - centre) / width) ** 2))
    bands["drusen"] = drusen
    bands["outer_segments"] = np.maximum(bands["outer_segments"] - 0.3 * drusen, 2.0)
    bands["choroid"] = profile["choroid"]
    return bands


def _choroid_texture(rng: np.random.Generator, shape: tuple[int, int], darkening: float) -> np.ndarray:
    """Multiplicative texture of choroidal vessels: dark lumens in a brighter stroma."""
    field = smooth_noise_field(rng, (max(shape[0] // 10, 4), max(shape[1] // 14, 4)), shape)
    lumens = np.clip((field - 0.1) * 1.2, 0.0, 1.0)
    return 1.0 - darkening * lumens


def _band_image(boundaries: np.ndarray, reflectivity: np.ndarray, height: int) -> np.ndarray:
    """Anti-aliased image of K bands between K+1 boundary rows (fractional pixels) per column: [H, W].

    Each pixel is the integral of the piecewise-constant reflectivity over its row span, taken as the difference of
    the cumulative integral at the pixel's two edges.
    """
    edges = np.arange(height + 1, dtype=np.float64)[:, None]  # [H+1, 1]
    cumulative = np.concatenate(
        [np.zeros((1, boundaries.shape[1])), np.cumsum(reflectivity * np.diff(boundaries, axis=0), axis=0)]
    )
    band = np.clip((boundaries[None, :, :] <= edges[:, None, :]).sum(axis=1) - 1, 0, len(reflectivity) - 1)  # [H+1, W]
    start = np.take_along_axis(boundaries, band, axis=0)
    integral = np.take_along_axis(cumulative, band, axis=0) + np.take_along_axis(
        reflectivity, band, axis=0
    ) * np.minimum(edges - start, np.take_along_axis(np.diff(boundaries, axis=0), band, axis=0))
    return np.diff(integral, axis=0)


def render_oct(
    eye: EyeAnatomy,
    rng: np.random.Generator,
    *,
    height: int,
    width: int,
    axial_um_per_px: float,
    scan_width_mm: float,
    pit_sigma_mm: float,
    structure: Mapping[str, float],
    look: Mapping[str, Any],
) -> np.ndarray:
    """A grey uint8 [height, width] B-scan through the fovea, vitreous on top, nasal side per `nasal_sign`."""
    x_mm = scan_positions_mm(width, scan_width_mm)
    bands = band_thicknesses_um(eye, x_mm, pit_sigma_mm, structure, rng)
    retina_px = np.stack([bands[name] for name in RETINAL_BANDS]) / axial_um_per_px  # [K, W]
    total_px = retina_px.sum(axis=0)
    half = scan_width_mm / 2
    rise = rng.uniform(*look["curvature_fraction"]) * height
    tilt = rng.uniform(*look["tilt_fraction"]) * height
    bruch = -rise * (x_mm / half) ** 2 + tilt * x_mm / half
    ilm = bruch - total_px
    bruch = (
        bruch
        + look["top_margin_fraction"] * height
        - ilm.min()
        + rng.uniform(0, look["position_jitter_fraction"]) * height
    )
    ilm = bruch - total_px
    upper = ilm[None, :] + np.concatenate([np.zeros((1, width)), np.cumsum(retina_px, axis=0)])  # ILM .. Bruch
    choroid_bottom = bruch + bands["choroid"] / axial_um_per_px
    boundaries = np.concatenate([np.zeros((1, width)), upper, choroid_bottom[None], np.full((1, width), float(height))])
    boundaries = np.clip(boundaries, 0.0, float(height))

    names = ("vitreous", *RETINAL_BANDS, "choroid", "sclera")
    reflect = np.array([look["reflectivity"][name] for name in names])[:, None]
    texture = 1.0 + look["layer_texture_sd"] * np.stack([_smooth_noise(rng, x_mm * 2.0) for _ in names])
    image = _band_image(boundaries, np.clip(reflect * texture, 0.0, 1.0), height)

    rows = np.arange(height, dtype=np.float64)[:, None]
    below_bruch = rows >= bruch[None, :]
    image = np.where(
        below_bruch, image * _choroid_texture(rng, (height, width), look["choroid_vessel_darkening"]), image
    )
    _add_dr_features(image, eye, rng, x_mm, upper, look)
    depth_um = np.clip(rows - ilm[None, :], 0.0, None) * axial_um_per_px
    image *= np.exp(-depth_um / look["attenuation_um"])
    image = gaussian_filter1d(image, look["axial_blur_px"], axis=0)

    looks = look["speckle_looks"]
    speckle = gaussian_filter(rng.gamma(looks, 1.0 / looks, size=(height, width)), look["speckle_sigma_px"])
    speckle /= speckle.mean()
    signal = image * speckle + look["noise_floor"] * rng.random((height, width))
    display = np.log1p(look["log_gain"] * signal) / np.log1p(look["log_gain"])
    display = (display - look["black_level"]) / (1.0 - look["black_level"])
    return np.clip(display * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _add_dr_features(
    image: np.ndarray,
    eye: EyeAnatomy,
    rng: np.random.Generator,
    x_mm: np.ndarray,
    upper: np.ndarray,
    look: Mapping[str, Any],
) -> None:
    """Intraretinal cysts (dark, in the INL/ONL near the fovea) and hard exudates (bright dots in the OPL), in place."""
    height, width = image.shape
    rows = np.arange(height)[:, None]
    cols = np.arange(width)[None, :]
    inl_top, onl_bottom = upper[RETINAL_BANDS.index("inl")], upper[RETINAL_BANDS.index("elm")]
    near = np.flatnonzero(np.abs(x_mm) < 1.2)
    for _ in range(eye.cyst_count):
        col = int(rng.choice(near))
        top, bottom = inl_top[col], onl_bottom[col]
        half_height = max((bottom - top) * rng.uniform(0.1, 0.25), 1.0)
        centre = rng.uniform(top + half_height, max(bottom - half_height, top + half_height))
        half_width = half_height * rng.uniform(0.8, 1.6)
        inside = ((rows - centre) / half_height) ** 2 + ((cols - col) / half_width) ** 2 < 1.0
        image[inside] = look["cyst_reflectivity"]
    opl_top = upper[RETINAL_BANDS.index("opl")]
    for _ in range(min(eye.biomarkers.get("hard_exudate_count", 0) // 3, 6)):
        col = int(rng.choice(near))
        row = int(opl_top[col])
        image[max(row - 1, 0) : row + 2, max(col - 1, 0) : col + 2] = look["hard_exudate_reflectivity"]
