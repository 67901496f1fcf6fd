"""Render a colour fundus photograph whose disc, cup, vessels and lesions carry the eye's CFP biomarkers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from scipy.ndimage import gaussian_filter

from grok.data.synth.sampling import EyeAnatomy


@dataclass(frozen=True)
class FundusGeometry:
    """Pixel positions of the landmarks of one photograph."""

    size: int
    um_per_px: float
    fovea: tuple[float, float]  # (x, y)
    disc: tuple[float, float]
    disc_radii: tuple[float, float]  # (horizontal, vertical)
    cup_radii: tuple[float, float]
    temporal: int  # -1 when temporal retina is on the image's left (right eye)


def fundus_geometry(eye: EyeAnatomy, size: int, field_of_view_mm: float, look: Mapping[str, Any]) -> FundusGeometry:
    """Where the fovea and disc lie and how big disc and cup are, from the eye's disc diameter and cup-to-disc ratio."""
    um_per_px = field_of_view_mm * 1000.0 / size
    temporal = -1 if eye.eye == "R" else 1
    centre = size / 2
    fovea = (centre + temporal * abs(look["fovea_offset_fraction"]) * size, centre)
    disc = (fovea[0] - temporal * look["disc_fovea_distance_mm"] * 1000.0 / um_per_px, centre)
    vertical = eye.biomarkers["disc_vertical_diameter_um"] / 2 / um_per_px
    disc_radii = (look["disc_aspect"] * vertical, vertical)
    ratio = eye.biomarkers["cup_disc_ratio"]
    return FundusGeometry(
        size, um_per_px, fovea, disc, disc_radii, (ratio * disc_radii[0], ratio * disc_radii[1]), temporal
    )


@lru_cache(maxsize=1)
def _tortuosity_table() -> tuple[np.ndarray, np.ndarray]:
    """Arc/chord of a sine wiggle as a function of its slope amplitude k = 2*pi*A/wavelength."""
    k = np.linspace(0.0, 3.0, 601)
    theta = np.linspace(0.0, 2 * np.pi, 512, endpoint=False)
    return k, np.sqrt(1 + (k[:, None] * np.cos(theta)[None, :]) ** 2).mean(axis=1)


def wiggle_amplitude(tortuosity: float, wavelength: float) -> float:
    """Amplitude of a sine wiggle of this wavelength whose arc length / chord length equals `tortuosity`."""
    k, factor = _tortuosity_table()
    return float(np.interp(tortuosity, factor, k)) * wavelength / (2 * np.pi)


def _segment_points(
    start: np.ndarray,
    angle: float,
    length: float,
    curvature: float,
    amplitude: float,
    wavelength: float,
    phase: float,
) -> tuple[np.ndarray, float]:
    """Points of one vessel segment (gently curving course plus a tapered sine wiggle) and its end direction."""
    n = max(int(length), 4)
    s = np.arange(n) * (length / (n - 1))
    heading = angle + curvature * s / max(length, 1e-6)
    cos, sin = np.cos(heading), np.sin(heading)
    step = length / (n - 1)
    envelope = np.minimum(np.minimum(s, length - s) / (0.15 * length + 1e-6), 1.0)
    offset = amplitude * envelope * np.sin(2 * np.pi * s / wavelength + phase)
    x = start[0] + np.cumsum(cos) * step - cos[0] * step - sin * offset
    y = start[1] + np.cumsum(sin) * step - sin[0] * step + cos * offset
    return np.column_stack([x, y]), float(heading[-1])


def vessel_tree(
    rng: np.random.Generator,
    start: tuple[float, float],
    angle: float,
    curvature: float,
    width: float,
    length: float,
    generations: float,
    tortuosity: float,
    look: Mapping[str, Any],
    size: int,
    avoid: tuple[float, float, float],
) -> list[tuple[np.ndarray, float]]:
    """Polylines (points, width) of one vascular tree: segments that split into a continuation and a side branch.

    `generations` (fractional: the remainder is a probability) sets the branching depth, so a higher fractal dimension
    gives a denser tree; every segment wiggles so that its arc/chord ratio is `tortuosity`.
    """
    wavelength = look["wiggle_wavelength_fraction"] * size
    amplitude = wiggle_amplitude(tortuosity, wavelength)
    low, high = np.deg2rad(look["branch_angle_deg"])
    stack = [(np.array(start, dtype=np.float64), angle, curvature, width, length, 0)]
    polylines = []
    while stack:
        origin, heading, bend, calibre, span, depth = stack.pop()
        points, end_heading = _segment_points(origin, heading, span, bend, amplitude, wavelength, rng.uniform(0, 6.28))
        inside = np.hypot(points[:, 0] - avoid[0], points[:, 1] - avoid[1]) > avoid[2]
        cut = len(points) if inside.all() else int(np.argmin(inside))
        if cut >= 2:
            polylines.append((points[:cut], calibre))
        limit = int(generations) + (rng.random() < generations - int(generations))
        if cut < len(points) or depth + 1 > limit or calibre < 0.35:
            continue
        taper = look["branch_taper"]
        side = rng.choice([-1.0, 1.0])
        stack.append(
            (
                points[-1],
                end_heading + side * rng.uniform(0, 0.15),
                bend * 0.35,
                calibre * taper**0.5,
                span * 0.75,
                depth + 1,
            )
        )
        stack.append(
            (
                points[-1],
                end_heading - side * rng.uniform(low, high),
                rng.normal(0, 0.3),
                calibre * taper,
                span * 0.6,
                depth + 1,
            )
        )
    return polylines


def _generations(fractal_dim: float, look: Mapping[str, Any]) -> float:
    (fd_low, g_low), (fd_high, g_high) = look["generations_at_fd"]
    return float(np.interp(fractal_dim, [fd_low, fd_high], [g_low, g_high]))


def _draw_mask(size: int, scale: int, shapes: list[tuple[str, Any, float]]) -> np.ndarray:
    """Anti-aliased coverage [size, size] of lines/ellipses drawn at `scale`x resolution then box-filtered."""
    canvas = Image.new("L", (size * scale, size * scale), 0)
    draw = ImageDraw.Draw(canvas)
    for kind, geometry, width in shapes:
        if kind == "line":
            draw.line([tuple(p) for p in (geometry * scale).tolist()], fill=255, width=max(round(width * scale), 1))
        else:
            x, y, rx, ry = geometry
            draw.ellipse([(x - rx) * scale, (y - ry) * scale, (x + rx) * scale, (y + ry) * scale], fill=255)
    return np.asarray(canvas.reduce(scale), dtype=np.float32) / 255.0


@lru_cache(maxsize=4)
def _pixel_grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (yy, xx), shared read-only between calls."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    yy.flags.writeable = xx.flags.writeable = False
    return yy, xx


def smooth_noise_field(rng: np.random.Generator, coarse_shape: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    """A smooth random field [shape] (unit-ish variance): bicubic upsampling of a coarse Gaussian grid."""
    coarse = Image.fromarray(rng.standard_normal(coarse_shape).astype(np.float32), mode="F")
    return np.asarray(coarse.resize((shape[1], shape[0]), Image.Resampling.BICUBIC))


def _soft_ellipse(
    shape: tuple[int, int], centre: tuple[float, float], radii: tuple[float, float], edge: float
) -> np.ndarray:
    yy, xx = _pixel_grid(*shape)
    distance = np.hypot((xx - centre[0]) / radii[0], (yy - centre[1]) / radii[1])
    return np.clip((1.0 - distance) * min(radii) / edge + 0.5, 0.0, 1.0)


def _composite(image: np.ndarray, alpha: np.ndarray, rgb: Any) -> np.ndarray:
    alpha = alpha.astype(np.float32)[..., None]
    return image + (np.asarray(rgb, dtype=np.float32) - image) * alpha


def _background(rng: np.random.Generator, geo: FundusGeometry, look: Mapping[str, Any]) -> np.ndarray:
    size = geo.size
    yy, xx = _pixel_grid(size, size)
    radius = np.hypot(xx - size / 2, yy - size / 2) / (size / 2)
    weight = np.clip(1.0 - look["vignetting"] * radius**2, 0.0, 1.0)[..., None]
    image = (
        np.asarray(look["periphery_rgb"], float)
        + (np.asarray(look["background_rgb"], float) - np.asarray(look["periphery_rgb"], float)) * weight
    )
    texture = smooth_noise_field(rng, (28, 28), (size, size))
    image *= (1.0 + look["choroid_texture_sd"] * texture)[..., None]
    macula = np.exp(
        -((xx - geo.fovea[0]) ** 2 + (yy - geo.fovea[1]) ** 2) / (2 * (look["macula_radius_fraction"] * size) ** 2)
    )
    return _composite(image.astype(np.float32), 0.75 * macula, look["macula_rgb"])


def _lesion_positions(
    rng: np.random.Generator, n: int, geo: FundusGeometry, spread: float, look: Mapping[str, Any]
) -> np.ndarray:
    """`n` positions around the fovea (Gaussian of `spread` x the lesion field), never on the disc."""
    field = look["lesion_field_fraction"] * geo.size
    points = np.empty((0, 2))
    while len(points) < n:
        candidates = np.asarray(geo.fovea) + rng.normal(0, spread * field, size=(2 * n + 4, 2))
        on_disc = np.hypot(candidates[:, 0] - geo.disc[0], candidates[:, 1] - geo.disc[1]) < 1.4 * geo.disc_radii[1]
        in_field = np.hypot(candidates[:, 0] - geo.size / 2, candidates[:, 1] - geo.size / 2) < 0.42 * geo.size
        points = np.concatenate([points, candidates[~on_disc & in_field]])
    return points[:n]


def _lesions(rng: np.random.Generator, eye: EyeAnatomy, geo: FundusGeometry, look: Mapping[str, Any]) -> list:
    """(rgb, shapes) per lesion type, with exactly the table's counts."""
    counts = eye.biomarkers
    layers = []
    n = counts.get("drusen_count", 0)
    shapes = [
        ("ellipse", (x, y, r, r), 0)
        for (x, y), r in zip(_lesion_positions(rng, n, geo, 0.45, look), rng.uniform(0.9, 2.4, n), strict=True)
    ]
    layers.append((look["drusen_rgb"], shapes))
    n = counts.get("hard_exudate_count", 0)
    centres = _lesion_positions(rng, max(1, min(3, n)), geo, 0.6, look)
    spots = centres[rng.integers(len(centres), size=n)] + rng.normal(0, 0.05 * geo.size, size=(n, 2))
    shapes = [
        ("ellipse", (x, y, r, r * a), 0)
        for (x, y), r, a in zip(spots, rng.uniform(0.7, 1.8, n), rng.uniform(0.6, 1.4, n), strict=True)
    ]
    layers.append((look["exudate_rgb"], shapes))
    n = counts.get("haemorrhage_count", 0)
    shapes = [
        ("ellipse", (x, y, r, r * a), 0)
        for (x, y), r, a in zip(
            _lesion_positions(rng, n, geo, 0.9, look), rng.uniform(1.5, 3.5, n), rng.uniform(0.5, 1.6, n), strict=True
        )
    ]
    layers.append((look["haemorrhage_rgb"], shapes))
    n = counts.get("microaneurysm_count", 0)
    shapes = [
        ("ellipse", (x, y, r, r), 0)
        for (x, y), r in zip(_lesion_positions(rng, n, geo, 0.7, look), rng.uniform(0.6, 1.1, n), strict=True)
    ]
    layers.append((look["microaneurysm_rgb"], shapes))
    return layers


def _vessels(rng: np.random.Generator, eye: EyeAnatomy, geo: FundusGeometry, look: Mapping[str, Any]) -> dict:
    """Artery and vein polylines: four arcades each, leaving the disc, temporal ones curving around the macula."""
    b = eye.biomarkers
    vein_width = look["vein_width_um"] / geo.um_per_px
    widths = {"artery": b["av_ratio"] * vein_width, "vein": vein_width}
    tortuosity = {"artery": b["arterial_tortuosity"], "vein": b["venular_tortuosity"]}
    generations = {
        "artery": _generations(b["arterial_fractal_dim"], look),
        "vein": _generations(b["venular_fractal_dim"], look),
    }
    size = geo.size
    # The central vessels emerge at the nasal margin of the cup, leaving its vertical extent visible.
    origin = (geo.disc[0] - geo.temporal * (geo.cup_radii[0] + 0.5 * vein_width), geo.disc[1])
    avoid = (*geo.fovea, 0.035 * size)
    # Arcades in a right-eye frame (temporal = -x, y down): (temporal side?, vertical sign, angle from vertical in
    # degrees, curvature in radians over the first segment, length as a fraction of the first-segment length).
    arcades = [
        (True, -1, 10.0, -1.05, 1.0),
        (True, 1, 10.0, 1.05, 1.0),
        (False, -1, 40.0, 0.3, 0.6),
        (False, 1, 40.0, -0.3, 0.6),
    ]
    mirror = geo.temporal  # -1 right eye (as drawn), +1 left eye
    trees: dict[str, list] = {"artery": [], "vein": []}
    for kind, shift in (("vein", 8.0), ("artery", -8.0)):
        for temporal_side, vertical, degrees, bend, span in arcades:
            theta = np.deg2rad(degrees + shift + rng.normal(0, 4.0))
            dx = (-1.0 if temporal_side else 1.0) * np.sin(theta) * -mirror
            dy = vertical * np.cos(theta)
            trees[kind] += vessel_tree(
                rng,
                origin,
                float(np.arctan2(dy, dx)),
                -mirror * bend * rng.uniform(0.8, 1.2),
                widths[kind],
                span * look["segment_length_fraction"] * size * rng.uniform(0.9, 1.1),
                generations[kind],
                tortuosity[kind],
                look,
                size,
                avoid,
            )
    return trees


def render_cfp(
    eye: EyeAnatomy, rng: np.random.Generator, *, size: int, field_of_view_mm: float, look: Mapping[str, Any]
) -> np.ndarray:
    """An RGB uint8 [size, size, 3] macula-centred fundus photograph; the disc is nasal (right for a right eye)."""
    geo = fundus_geometry(eye, size, field_of_view_mm, look)
    scale = look["supersample"]
    image = _background(rng, geo, look)
    disc = _soft_ellipse((size, size), geo.disc, geo.disc_radii, look["disc_edge_px"])
    image = _composite(image, disc, look["disc_rim_rgb"])
    image = _composite(
        image, _soft_ellipse((size, size), geo.disc, geo.cup_radii, look["disc_edge_px"]), look["cup_rgb"]
    )
    trees = _vessels(rng, eye, geo, look)
    on_disc = 1.0 - (1.0 - look["vessel_alpha_on_disc"]) * disc
    for kind in ("vein", "artery"):
        alpha = _draw_mask(size, scale, [("line", points, width) for points, width in trees[kind]]) * on_disc
        image = _composite(image, alpha, look[f"{kind}_rgb"])
        if kind == "artery":
            reflex = _draw_mask(
                size, scale, [("line", points, width * 0.3) for points, width in trees[kind] if width > 1.2]
            )
            image = _composite(image, 0.5 * reflex * on_disc, look["artery_reflex_rgb"])
    for rgb, shapes in _lesions(rng, eye, geo, look):
        if shapes:
            image = _composite(image, _draw_mask(size, scale, shapes), rgb)
    image = gaussian_filter(image, (look["blur_px"], look["blur_px"], 0))
    image += rng.normal(0.0, look["sensor_noise_sd"], image.shape)
    field = _soft_ellipse((size, size), (size / 2, size / 2), (0.49 * size, 0.49 * size), 1.0)
    return np.clip(image * field[..., None] + 0.5, 0, 255).astype(np.uint8)
