"""Render OCT B-scans whose layer bands have the eye's thicknesses at a declared axial scale: the horizontal B-scan
through the fovea and, optionally, a volume of parallel B-scans across the macular cube sampling one thickness map."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter, gaussian_filter1d

from grok.data.synth.anatomy import foveal_profile, quadrant_weights, rnfl_quadrant_offset_um
from grok.data.synth.cfp_render import smooth_noise_field
from grok.data.synth.sampling import EyeAnatomy

# Bands from the ILM down to Bruch's membrane, in drawing order.
RETINAL_BANDS = (
    "rnfl", "gcl", "ipl", "inl", "opl", "onl", "elm", "inner_segments", "ellipsoid_zone", "outer_segments", "rpe",
    "drusen",
)  # fmt: skip
# Lesions near the fovea (cysts, exudates) lie within this radius (mm).
LESION_RADIUS_MM = 1.2
# A druse drawn only for the volume is cut off this many widths from its centre in y, and its centre lies at least
# EXTRA_DRUSE_MIN_Y_MM from the horizontal line, so it never reaches the central B-scan.
DRUSE_REACH_WIDTHS, EXTRA_DRUSE_MIN_Y_MM = 3.0, 1.0


def scan_positions_mm(width: int, scan_width_mm: float) -> np.ndarray:
    """Lateral position (mm from the fovea) of each A-scan column; negative is the image's left."""
    return (np.arange(width) + 0.5) / width * scan_width_mm - scan_width_mm / 2


def slice_positions_mm(num_slices: int, cube_height_mm: float) -> np.ndarray:
    """Vertical position (mm from the fovea, > 0 superior) of each B-scan of a volume: slice 0 is the most superior,
    slice `num_slices // 2` passes through the fovea (y = 0 exactly), one pitch of `cube_height_mm / num_slices`."""
    pitch = cube_height_mm / num_slices
    return (num_slices // 2 - np.arange(num_slices)) * pitch


def nasal_sign(eye: str) -> int:
    """+1 when nasal retina is on the image's right (right eye, as in the CFP), -1 for the left eye."""
    return 1 if eye == "R" else -1


def _smooth_noise(rng: np.random.Generator, x: np.ndarray, n_waves: int = 4) -> np.ndarray:
    """Zero-mean smooth lateral variation with unit-ish amplitude (a few random sines)."""
    freqs = rng.uniform(0.6, 3.0, n_waves)
    phases = rng.uniform(0, 2 * np.pi, n_waves)
    return np.sin(np.outer(x, freqs) + phases).sum(axis=1) / np.sqrt(n_waves / 2)


@dataclass(frozen=True)
class Druse:
    """A drusen dome under the RPE: centre (mm from the fovea, y > 0 superior), width (mm), height (um)."""

    x_mm: float
    y_mm: float
    width_mm: float
    height_um: float
    reach_widths: float = math.inf  # cut off beyond this many widths from the centre in y

    def height_at(self, y_mm: float) -> float:
        """Peak height (um) of the dome's cross-section in the B-scan at `y_mm`."""
        dy = (y_mm - self.y_mm) / self.width_mm
        return 0.0 if abs(dy) >= self.reach_widths else self.height_um * math.exp(-(dy**2))


@dataclass(frozen=True)
class ScanGeometry:
    """What every B-scan of one eye shares: RPE waviness, drusen, eye curvature and tilt (drawn once per eye)."""

    wave_freqs: np.ndarray  # the RPE waviness: sines of (freq * 3x + y_freq * 3y + phase)
    wave_phases: np.ndarray
    drusen: tuple[Druse, ...]
    rise: float  # eye curvature and tilt, pixels over the half scan
    tilt: float
    jitter: float  # vertical placement of the central B-scan (every other slice draws its own)
    wave_y_freqs: np.ndarray | None = None  # None: only the horizontal line through the fovea is drawn


def draw_scan_geometry(eye: EyeAnatomy, rng: np.random.Generator, height: int, look: Mapping[str, Any]) -> ScanGeometry:
    """The eye's shared geometry: the first draws of the central B-scan's random stream."""
    freqs = rng.uniform(0.6, 3.0, 4)
    phases = rng.uniform(0, 2 * np.pi, 4)
    drusen = []
    for height_um in eye.drusen_heights_um:
        centre, width = rng.uniform(-2.2, 2.2), rng.uniform(0.12, 0.3)
        drusen.append(Druse(float(centre), 0.0, float(width), float(height_um)))
    rise = rng.uniform(*look["curvature_fraction"]) * height
    tilt = rng.uniform(*look["tilt_fraction"]) * height
    jitter = rng.uniform(0, look["position_jitter_fraction"]) * height
    return ScanGeometry(freqs, phases, tuple(drusen), float(rise), float(tilt), float(jitter))


def extend_to_volume(geometry: ScanGeometry, rng: np.random.Generator) -> ScanGeometry:
    """The geometry of a whole macular cube: RPE waviness that varies along y too, and as many drusen again
    scattered off the horizontal line (none reaching it, so the central B-scan stays as it is)."""
    y_freqs = rng.uniform(0.6, 3.0, len(geometry.wave_freqs)) * rng.choice([-1.0, 1.0], len(geometry.wave_freqs))
    extra = []
    for druse in geometry.drusen:
        y = rng.uniform(EXTRA_DRUSE_MIN_Y_MM, 2.2) * rng.choice([-1.0, 1.0])
        extra.append(
            Druse(float(rng.uniform(-2.2, 2.2)), float(y), druse.width_mm, druse.height_um, DRUSE_REACH_WIDTHS)
        )
    return replace(geometry, wave_y_freqs=y_freqs, drusen=geometry.drusen + tuple(extra))


def band_thicknesses_um(
    eye: EyeAnatomy,
    x_mm: np.ndarray,
    pit_sigma_mm: float,
    structure: Mapping[str, float],
    geometry: ScanGeometry,
    y_mm: float = 0.0,
    blend_deg: float = 30.0,
) -> dict[str, np.ndarray]:
    """Thickness (um) of every retinal band and of the choroid along the B-scan at `y_mm` (> 0 superior): the eye's
    thickness map (`anatomy.macular_thickness_map_um`) sampled along the scan line, plus RPE waviness and drusen."""
    r = np.hypot(x_mm, y_mm)
    profile = {name: foveal_profile(values, r, pit_sigma_mm) for name, values in eye.layers.items()}
    weights = quadrant_weights(x_mm * nasal_sign(eye.eye), y_mm, blend_deg)
    profile["rnfl"] = profile["rnfl"] + rnfl_quadrant_offset_um(eye.rnfl_quadrant_offsets, r, weights, float(r.max()))
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
    phase = np.outer(x_mm * 3.0, geometry.wave_freqs)
    if geometry.wave_y_freqs is not None:
        phase = phase + (y_mm * 3.0) * geometry.wave_y_freqs
    waves = np.sin(phase + geometry.wave_phases).sum(axis=1) / np.sqrt(len(geometry.wave_freqs) / 2)
    bands["rpe"] = profile["rpe"] + eye.rpe_irregularity_um * np.abs(waves)
    drusen = np.zeros_like(x_mm)
    for druse in geometry.drusen:
        height = druse.height_at(y_mm)
        if height > 0.0:
            drusen += height * np.exp(-(((x_mm - druse.x_mm) / druse.width_mm) ** 2))
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


@dataclass(frozen=True)
class OctScale:
    """The pixel grid and the physics shared by every B-scan of a dataset (see `conf/synth.yaml: options`)."""

    height: int
    width: int
    axial_um_per_px: float
    scan_width_mm: float
    pit_sigma_mm: float
    structure: Mapping[str, float]
    look: Mapping[str, Any]


def render_bscan(
    eye: EyeAnatomy,
    geometry: ScanGeometry,
    rng: np.random.Generator,
    scale: OctScale,
    *,
    y_mm: float = 0.0,
    jitter: float | None = None,
    blend_deg: float = 30.0,
) -> np.ndarray:
    """A grey uint8 [height, width] horizontal B-scan at `y_mm` (> 0 superior; 0 through the fovea), vitreous on top,
    nasal side per `nasal_sign`; `rng` draws its texture, lesions near the fovea and speckle."""
    height, width, look = scale.height, scale.width, scale.look
    x_mm = scan_positions_mm(width, scale.scan_width_mm)
    bands = band_thicknesses_um(eye, x_mm, scale.pit_sigma_mm, scale.structure, geometry, y_mm, blend_deg)
    retina_px = np.stack([bands[name] for name in RETINAL_BANDS]) / scale.axial_um_per_px  # [K, W]
    total_px = retina_px.sum(axis=0)
    half = scale.scan_width_mm / 2
    bruch = -geometry.rise * (x_mm / half) ** 2 + geometry.tilt * x_mm / half
    ilm = bruch - total_px
    placement = geometry.jitter if jitter is None else jitter
    bruch = bruch + look["top_margin_fraction"] * height - ilm.min() + placement
    ilm = bruch - total_px
    upper = ilm[None, :] + np.concatenate([np.zeros((1, width)), np.cumsum(retina_px, axis=0)])  # ILM .. Bruch
    choroid_bottom = bruch + bands["choroid"] / scale.axial_um_per_px
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
    _add_dr_features(image, eye, rng, x_mm, y_mm, upper, look)
    depth_um = np.clip(rows - ilm[None, :], 0.0, None) * scale.axial_um_per_px
    image *= np.exp(-depth_um / look["attenuation_um"])
    image = gaussian_filter1d(image, look["axial_blur_px"], axis=0)

    looks = look["speckle_looks"]
    speckle = gaussian_filter(rng.gamma(looks, 1.0 / looks, size=(height, width)), look["speckle_sigma_px"])
    speckle /= speckle.mean()
    signal = image * speckle + look["noise_floor"] * rng.random((height, width))
    display = np.log1p(look["log_gain"] * signal) / np.log1p(look["log_gain"])
    display = (display - look["black_level"]) / (1.0 - look["black_level"])
    return np.clip(display * 255.0 + 0.5, 0, 255).astype(np.uint8)


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
    scale = OctScale(height, width, axial_um_per_px, scan_width_mm, pit_sigma_mm, structure, look)
    return render_bscan(eye, draw_scan_geometry(eye, rng, height, look), rng, scale)


def render_oct_volume(
    eye: EyeAnatomy,
    rng: np.random.Generator,
    volume_rng: np.random.Generator,
    scale: OctScale,
    y_positions_mm: Sequence[float],
    blend_deg: float,
) -> np.ndarray:
    """A uint8 [slices, height, width] stack of B-scans at `y_positions_mm`, all sampling one thickness map.

    `rng` is the central B-scan's stream: the slice at y = 0 is exactly `render_oct` with it (and `rng` is left where
    `render_oct` leaves it). Every other slice draws its texture, lesions and speckle from `volume_rng`.
    """
    geometry = draw_scan_geometry(eye, rng, scale.height, scale.look)
    central = render_bscan(eye, geometry, rng, scale, blend_deg=blend_deg)
    cube = extend_to_volume(geometry, volume_rng)
    slices = []
    for y_mm in y_positions_mm:
        if y_mm == 0.0:
            slices.append(central)
            continue
        jitter = volume_rng.uniform(0, scale.look["position_jitter_fraction"]) * scale.height
        slices.append(render_bscan(eye, cube, volume_rng, scale, y_mm=float(y_mm), jitter=jitter, blend_deg=blend_deg))
    return np.stack(slices)


def _add_dr_features(
    image: np.ndarray,
    eye: EyeAnatomy,
    rng: np.random.Generator,
    x_mm: np.ndarray,
    y_mm: float,
    upper: np.ndarray,
    look: Mapping[str, Any],
) -> None:
    """Intraretinal cysts (dark, in the INL/ONL near the fovea) and hard exudates (bright dots in the OPL), in place.

    Both lie within `LESION_RADIUS_MM` of the fovea; a B-scan off the centre holds its chord's share of them.
    """
    height, width = image.shape
    rows = np.arange(height)[:, None]
    cols = np.arange(width)[None, :]
    inl_top, onl_bottom = upper[RETINAL_BANDS.index("inl")], upper[RETINAL_BANDS.index("elm")]
    near = np.flatnonzero(np.hypot(x_mm, y_mm) < LESION_RADIUS_MM)
    chord = math.sqrt(max(1.0 - (y_mm / LESION_RADIUS_MM) ** 2, 0.0)) if near.size else 0.0
    for _ in range(round(eye.cyst_count * chord)):
        col = int(rng.choice(near))
        top, bottom = inl_top[col], onl_bottom[col]
        half_height = max((bottom - top) * rng.uniform(0.1, 0.25), 1.0)
        centre = rng.uniform(top + half_height, max(bottom - half_height, top + half_height))
        half_width = half_height * rng.uniform(0.8, 1.6)
        inside = ((rows - centre) / half_height) ** 2 + ((cols - col) / half_width) ** 2 < 1.0
        image[inside] = look["cyst_reflectivity"]
    opl_top = upper[RETINAL_BANDS.index("opl")]
    for _ in range(round(min(eye.biomarkers.get("hard_exudate_count", 0) // 3, 6) * chord)):
        col = int(rng.choice(near))
        row = int(opl_top[col])
        image[max(row - 1, 0) : row + 2, max(col - 1, 0) : col + 2] = look["hard_exudate_reflectivity"]
