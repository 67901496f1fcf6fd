"""Read biomarkers back from rendered SynthEye images by intensity edges (used by the signal tests)."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import binary_fill_holes, gaussian_filter
from skimage.measure import label


def _crossing(profile: np.ndarray, start: int, stop: int, level: float) -> float:
    """Sub-pixel position (pixel-edge coordinates) where `profile` first crosses `level` between start and stop."""
    step = 1 if stop >= start else -1
    for y in range(start, stop, step):
        a, b = profile[y], profile[y + step]
        if (a - level) * (b - level) <= 0 and a != b:
            centre = y + 0.5 + step * (level - a) / (b - a)
            return float(centre)
    raise ValueError("no crossing")


def retinal_thickness_px(oct_image: np.ndarray, column: int, half_window: int = 2) -> float:
    """ILM to Bruch's membrane (bottom of the RPE) in pixels, from the mean A-scan around `column`."""
    profile = oct_image[:, column - half_window : column + half_window + 1].astype(float).mean(axis=1)
    profile = gaussian_filter(profile, 0.5)
    first = int(np.argmax(profile > 0.3 * profile.max()))
    peak = profile[first : first + 5].max()
    ilm = _crossing(profile, max(first - 4, 0), first + 4, peak / 2)
    bright = np.flatnonzero(profile > 0.7 * profile.max())
    rpe = int(bright[-1])  # the deepest bright band is the RPE; climb to its peak
    while rpe > 0 and profile[rpe - 1] >= profile[rpe]:
        rpe -= 1
    choroid = float(np.median(profile[rpe + 5 : rpe + 14]))
    bruch = _crossing(profile, rpe, min(rpe + 12, len(profile) - 1), (profile[rpe] + choroid) / 2)
    return bruch - ilm


def cup_disc_ratio(cfp_image: np.ndarray, rim_green: float) -> float:
    """Vertical cup-to-disc ratio from the green channel: vertical extent of the large bright blob (disc, its rim of
    green level `rim_green`) and of its whitest core (cup), each segmented at the half-way level of its edge."""
    green = gaussian_filter(cfp_image[..., 1].astype(float), 0.7)
    background = np.median(green[green > 10])  # inside the camera's field
    disc_mask = green > 0.5 * (background + rim_green)
    labels = label(disc_mask)
    largest = np.argmax(np.bincount(labels.ravel())[1:]) + 1
    disc = binary_fill_holes(labels == largest)
    rows = np.flatnonzero(disc.any(axis=1))
    cols = np.flatnonzero(disc.any(axis=0))
    window = green[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    inside = disc[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    peak = np.percentile(window[inside], 99)
    cup_mask = (window > 0.5 * (rim_green + peak)) & inside
    if not cup_mask.any():
        return 0.0
    cup_labels = label(cup_mask)
    cup = binary_fill_holes(cup_labels == np.argmax(np.bincount(cup_labels.ravel())[1:]) + 1)
    cup_rows = np.flatnonzero(cup.any(axis=1))
    return (cup_rows[-1] - cup_rows[0] + 1) / (rows[-1] - rows[0] + 1)
