"""Readers for OCT B-scans (single images, slice folders, multi-page TIFF, Heidelberg files) and fundus photographs.

A file that cannot be decoded (missing, truncated, not an image, a decompression bomb) raises `ImageReadError` naming
it. An image that does not look like its modality (a grey fundus photograph, a colour OCT) is read, with one warning
per file naming it. `read_oct_volume` reads a whole volume (or the slices `select_slices` picks by config:
`central`, `all`, k evenly spaced, or a list of indices) as a stack of B-scans; a selection that does not fit the
volume raises `SliceSelectionError` naming the file and the value.
"""

from __future__ import annotations

import logging
import re
import struct
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from grok.utils.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
HEIDELBERG_SUFFIXES = (".vol", ".e2e")

SliceSpec = str | int | Sequence[int]
SLICE_KEY = "data.oct_slices"  # the config key a volume's slice selection comes from (named in errors)

# Colour spread: the mean over pixels of (largest - smallest channel), in 8-bit levels, on a small thumbnail. A grey
# image stored as RGB (or as JPEG) stays at about 0-1; a fundus photograph is far above 30 (SynthEye's ~70).
CFP_GREY_MAX_SPREAD = 1.0  # a fundus photograph at or below this is grey (R == G == B)
OCT_COLOUR_MIN_SPREAD = 10.0  # an OCT B-scan above this is in colour (a screenshot, a heat map, a fundus photograph?)
SPREAD_THUMBNAIL = (64, 64)
# What PIL raises on a malformed file, besides its own error types (decoders surface struct and index errors).
DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError)

log = logging.getLogger(__name__)
_warned: set[str] = set()  # files already warned about (one warning per file and process)


class ImageReadError(InputError):
    """An image could not be read; the message names the file and why."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path, self.reason = Path(path), reason
        super().__init__(f"cannot read image {self.path}: {reason}")


class SliceSelectionError(ImageReadError):
    """A slice selection that is malformed or does not fit a volume; the message names the value, the config key and
    (when known) the file."""

    def __init__(self, path: Path | str | None, reason: str) -> None:
        self.path, self.reason = Path(path) if path is not None else Path(), reason
        InputError.__init__(self, f"OCT volume {path}: {reason}" if path is not None else reason)


def _natural_key(path: Path) -> list[object]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def _to_uint8_grey(array: np.ndarray) -> Image.Image:
    """A 2-D array of any integer or float dtype as an 8-bit grey image (min-max scaled unless already uint8)."""
    if array.ndim == 3:
        array = array.mean(axis=-1)
    if array.dtype != np.uint8:
        array = array.astype(np.float32)
        low, high = float(np.nanmin(array)), float(np.nanmax(array))
        scale = 255.0 / (high - low) if high > low else 0.0
        array = np.nan_to_num((array - low) * scale).clip(0, 255).astype(np.uint8)
    return Image.fromarray(array, mode="L")


def _open_image(path: Path) -> Image.Image:
    if not path.exists():
        raise ImageReadError(path, "file does not exist")
    if path.is_dir():
        raise ImageReadError(path, "is a folder, not an image file")
    if path.stat().st_size == 0:
        raise ImageReadError(path, "the file is empty (0 bytes)")
    try:
        image = Image.open(path)
        image.load()
    except Image.DecompressionBombError as error:
        raise ImageReadError(path, f"refused as a possible decompression bomb ({error})") from error
    except DECODE_ERRORS as error:
        raise ImageReadError(path, f"corrupt or unsupported image ({error})") from error
    return image


def colour_spread(image: Image.Image) -> float:
    """How far the image is from grey: the mean (largest - smallest channel) over a thumbnail, in 8-bit levels."""
    if image.mode not in ("RGB", "RGBA", "P", "CMYK", "YCbCr", "LAB", "HSV"):
        return 0.0  # one channel (L, I, F, I;16...): grey by construction
    thumbnail = image.convert("RGB").resize(SPREAD_THUMBNAIL, Image.Resampling.NEAREST)
    pixels = np.asarray(thumbnail, dtype=np.int16)
    return float((pixels.max(axis=-1) - pixels.min(axis=-1)).mean())


def _check_modality(image: Image.Image, path: Path, modality: str) -> None:
    """Warn once per file when an image does not look like its modality (a grey CFP, a colour OCT)."""
    if str(path) in _warned:
        return
    spread = colour_spread(image)
    if modality == "cfp" and spread <= CFP_GREY_MAX_SPREAD:
        problem = f"is greyscale (mode {image.mode}, colour spread {spread:.1f}) but a fundus photograph is in colour"
    elif modality == "oct" and spread > OCT_COLOUR_MIN_SPREAD:
        problem = f"is in colour (colour spread {spread:.1f}) but an OCT B-scan is grey: is it a fundus photograph?"
    else:
        return
    _warned.add(str(path))
    log.warning("%s image %s %s", modality.upper(), path, problem)


def _select(count: int, slices: SliceSpec, path: Path) -> list[int]:
    if count == 0:
        raise ImageReadError(path, "the volume holds no slices")
    if slices == "central":
        return [count // 2]
    indices = [slices] if isinstance(slices, int) else list(slices)  # type: ignore[arg-type]
    if isinstance(slices, str) or not indices:
        raise ImageReadError(path, f"slices must be 'central', an index or a list of indices, got {slices!r}")
    for index in indices:
        if not -count <= index < count:
            raise ImageReadError(path, f"slice {index} out of range for a volume of {count} slices")
    return [index % count for index in indices]


def _frames_of_tiff(path: Path) -> int:
    image = _open_image(path)
    return getattr(image, "n_frames", 1)


def _read_tiff_frame(path: Path, index: int) -> Image.Image:
    image = _open_image(path)
    try:
        image.seek(index)
        image.load()
    except EOFError as error:
        raise ImageReadError(path, f"no page {index}") from error
    except DECODE_ERRORS as error:
        raise ImageReadError(path, f"corrupt page {index} ({error})") from error
    _check_modality(image, path, "oct")
    return _grey(image)


def _read_grey(path: Path) -> Image.Image:
    image = _open_image(path)
    _check_modality(image, path, "oct")
    return _grey(image)


def _grey(image: Image.Image) -> Image.Image:
    if image.mode in ("L",):
        return image.copy()
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return _to_uint8_grey(np.asarray(image))
    return image.convert("L")


def _read_heidelberg(path: Path) -> list[Image.Image]:
    try:
        import eyepy  # optional extra: pip install 'grok-eye[heidelberg]'
    except ImportError as error:
        raise ImageReadError(
            path, "Heidelberg files need the optional extra: pip install 'grok-eye[heidelberg]'"
        ) from error
    try:
        volume = eyepy.import_heyex_vol(path) if path.suffix.lower() == ".vol" else eyepy.import_heyex_e2e(path)
    except Exception as error:  # eyepy raises many types on malformed files
        raise ImageReadError(path, f"eyepy could not parse it ({error})") from error
    return [_to_uint8_grey(np.asarray(scan)) for scan in volume.data]


def _volume_members(path: Path) -> tuple[int, Callable[[int], Image.Image]]:
    """How many B-scans `path` holds and a reader of the i-th (decoded only when asked for, except Heidelberg)."""
    suffix = path.suffix.lower()
    if path.is_dir():
        files = sorted((p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=_natural_key)
        if not files:
            raise ImageReadError(
                path, f"the folder holds no slice images (files ending in {', '.join(IMAGE_SUFFIXES)})"
            )
        return len(files), lambda index: _read_grey(files[index])
    if suffix in HEIDELBERG_SUFFIXES:
        frames = _read_heidelberg(path)
        return len(frames), frames.__getitem__
    if suffix in (".tif", ".tiff"):
        return _frames_of_tiff(path), lambda index: _read_tiff_frame(path, index)
    if suffix in IMAGE_SUFFIXES:
        return 1, lambda index: _read_grey(path)
    if not suffix and not path.exists():
        raise ImageReadError(path, "no such file or folder")
    raise ImageReadError(
        path, f"unsupported OCT format '{path.suffix}'; expected {IMAGE_SUFFIXES + HEIDELBERG_SUFFIXES}"
    )


def read_oct(path: Path | str, slices: SliceSpec = "central") -> Image.Image | list[Image.Image]:
    """Read an OCT B-scan as an 8-bit grey image.

    `path` is one image (PNG/TIFF/JPEG), a multi-page TIFF volume, a folder of slice images (as UK Biobank exports
    them; ordered by natural filename order) or a Heidelberg `.vol`/`.e2e` file (optional eyepy extra). For volumes,
    `slices` picks the central slice (default), one index, or a list of indices (then a list is returned); for a
    config's selection (k evenly spaced) use `read_oct_volume`.
    """
    path = Path(path)
    count, read = _volume_members(path)
    chosen = [read(index) for index in _select(count, slices, path)]
    return chosen if not isinstance(slices, (str, int)) else chosen[0]


def check_slice_spec(spec: object, key: str = SLICE_KEY) -> str | int | tuple[int, ...]:
    """A slice selection as a config gives it, checked and normalised: 'central', 'all', k >= 1 (k evenly spaced
    slices) or a non-empty tuple of distinct indices (negative ones count from the end)."""
    expected = "expected 'central', 'all', a number k of evenly spaced slices, or a list of slice indices"
    if isinstance(spec, str):
        if spec in ("central", "all"):
            return spec
        raise SliceSelectionError(None, f"{key}={spec!r}: {expected}")
    if isinstance(spec, (int, np.integer)) and not isinstance(spec, (bool, np.bool_)):
        if spec < 1:
            raise SliceSelectionError(None, f"{key}={spec}: a number of evenly spaced slices must be at least 1")
        return int(spec)
    if isinstance(spec, (Sequence, np.ndarray)):
        indices = list(spec)
        bad = [v for v in indices if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer))]
        if not indices or bad:
            what = "an empty list" if not indices else f"non-integer entries {bad}"
            raise SliceSelectionError(None, f"{key}={indices}: {what}; {expected}")
        return tuple(int(v) for v in indices)
    raise SliceSelectionError(None, f"{key}={spec!r} ({type(spec).__name__}): {expected}")


def select_slices(count: int, spec: object, path: Path | str | None = None, key: str = SLICE_KEY) -> list[int]:
    """Indices (in [0, count)) of the slices a config's selection picks from a volume of `count` B-scans.

    'central' is slice count // 2 (the foveal B-scan of a SynthEye volume), 'all' every slice, an int k the k slices
    evenly spaced from the first to the last (odd k includes the central one; k = 1 is the central one), a list its
    indices in the order given. Errors name the file (`path`), the key and the value.
    """
    spec = check_slice_spec(spec, key)
    where = str(path) if path is not None else None
    if count < 1:
        raise SliceSelectionError(where, "the volume holds no slices")
    if spec == "central":
        return [count // 2]
    if spec == "all":
        return list(range(count))
    if isinstance(spec, int):
        if spec > count:
            raise SliceSelectionError(
                where, f"{key}={spec} asks for {spec} evenly spaced slices but the volume holds {count}"
            )
        if spec == 1:
            return [count // 2]
        return [int(v) for v in np.floor(np.linspace(0, count - 1, spec) + 0.5)]
    outside = [index for index in spec if not -count <= index < count]
    if outside:
        raise SliceSelectionError(
            where,
            f"{key}={list(spec)}: slice(s) {outside} out of range for a volume of {count} slices (0..{count - 1})",
        )
    chosen = [index % count for index in spec]
    repeated = sorted({index for index in chosen if chosen.count(index) > 1})
    if repeated:
        raise SliceSelectionError(where, f"{key}={list(spec)} names slice(s) {repeated} more than once")
    return chosen


def read_oct_volume(path: Path | str, slices: object = "all", key: str = SLICE_KEY) -> np.ndarray:
    """An OCT volume as a uint8 stack [slices, height, width] of grey B-scans, in the order `select_slices` gives.

    `path` is a folder of slice images (natural filename order), a multi-page TIFF, a Heidelberg `.vol`/`.e2e` file
    (optional eyepy extra) or a single image (a volume of one). Only the chosen slices are decoded (Heidelberg files
    are parsed whole). `Image.fromarray(stack[i])` gives the image the transforms take.
    """
    path = Path(path)
    count, read = _volume_members(path)
    chosen = select_slices(count, slices, path, key)
    scans = [np.asarray(read(index)) for index in chosen]
    for index, scan in zip(chosen[1:], scans[1:], strict=True):
        if scan.shape != scans[0].shape:
            raise ImageReadError(
                path,
                f"slice {index} is {scan.shape[1]}x{scan.shape[0]} px but slice {chosen[0]} is "
                f"{scans[0].shape[1]}x{scans[0].shape[0]}: the B-scans of a volume must share one size",
            )
    return np.stack(scans)


def read_cfp(path: Path | str) -> Image.Image:
    """Read a colour fundus photograph as an RGB image."""
    path = Path(path)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise ImageReadError(path, f"unsupported fundus image format '{path.suffix}'; expected {IMAGE_SUFFIXES}")
    image = _open_image(path)
    _check_modality(image, path, "cfp")
    return image.convert("RGB") if image.mode != "RGB" else image.copy()
