"""SynthEye OCT volumes: the option block (`conf/synth.yaml: options.oct_volume`) and the writers of one eye's stack
of B-scans as a slice folder and as a multi-page TIFF."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from PIL import Image

from grok.data.synth.oct_render import slice_positions_mm

VOLUME_DIR = "oct_volume"
VOLUME_COLUMN = "oct_volume_path"  # the table column naming each eye's volume (relative to the table)
VOLUME_FORMATS = ("folder", "tiff")  # oct_volume/<eye>/slice_000.png ... and oct_volume/<eye>.tif
MIN_SLICES, MAX_SLICES = 1, 512


@dataclass(frozen=True)
class VolumeOptions:
    """How each eye's OCT volume is drawn and written (off by default: the dataset is then as without volumes)."""

    enabled: bool = False
    num_slices: int = 25  # B-scans, superior (slice 0) to inferior; slice num_slices // 2 passes through the fovea
    formats: tuple[str, ...] = VOLUME_FORMATS  # the table column names the first one
    cube_height_mm: float = 6.0  # superior-inferior span of the slices (the macular cube is 6 x 6 mm)
    quadrant_blend_deg: float = 30.0  # width of the hand-over between ETDRS quadrants across the diagonals
    contact_sheet_slices: int = 5  # evenly spaced slices of one volume shown on the contact sheet

    @classmethod
    def from_config(cls, raw: Mapping[str, Any] | None, key: str = "options.oct_volume") -> VolumeOptions:
        """Parse and check the option block; errors name `key` and the value at fault."""
        raw = dict(raw or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise TypeError(
                f"unknown SynthEye option(s) {[f'{key}.{name}' for name in unknown]}; expected {sorted(known)}"
            )
        if "formats" in raw:
            formats = [raw["formats"]] if isinstance(raw["formats"], str) else list(raw["formats"])
            raw["formats"] = tuple(str(name) for name in formats)
        options = cls(**raw)
        if not isinstance(options.num_slices, int) or not MIN_SLICES <= options.num_slices <= MAX_SLICES:
            raise ValueError(
                f"{key}.num_slices={options.num_slices!r}: expected a whole number of B-scans in [{MIN_SLICES}, "
                f"{MAX_SLICES}] (e.g. 7 to 25)"
            )
        bad = [name for name in options.formats if name not in VOLUME_FORMATS]
        if bad or not options.formats or len(set(options.formats)) != len(options.formats):
            raise ValueError(f"{key}.formats={list(options.formats)}: expected distinct names among {VOLUME_FORMATS}")
        if not 0.0 < options.cube_height_mm <= 12.0:
            raise ValueError(f"{key}.cube_height_mm={options.cube_height_mm}: expected a span in (0, 12] mm")
        if not 0.0 < options.quadrant_blend_deg <= 90.0:
            raise ValueError(f"{key}.quadrant_blend_deg={options.quadrant_blend_deg}: expected degrees in (0, 90]")
        if options.contact_sheet_slices < 0:
            raise ValueError(f"{key}.contact_sheet_slices={options.contact_sheet_slices}: expected 0 or more")
        return options

    def as_parameters(self) -> dict[str, Any]:
        """The options as the manifest records them (JSON types)."""
        params = asdict(self)
        params["formats"] = list(self.formats)
        return params

    def positions_mm(self) -> np.ndarray:
        """Vertical position (mm, > 0 superior) of every slice; the central one is exactly 0."""
        return slice_positions_mm(self.num_slices, self.cube_height_mm)


def volume_paths(eye_id: str) -> dict[str, str]:
    """Relative path of one eye's volume in each format."""
    return {"folder": f"{VOLUME_DIR}/{eye_id}", "tiff": f"{VOLUME_DIR}/{eye_id}.tif"}


def slice_name(index: int, num_slices: int) -> str:
    """File name of a slice in the slice folder: zero-padded so plain and natural sort agree."""
    return f"slice_{index:0{max(3, len(str(num_slices - 1)))}d}.png"


def write_volume(stack: np.ndarray, root: Path, eye_id: str, options: VolumeOptions, compress_level: int) -> str:
    """Write a uint8 [slices, H, W] stack in every configured format; returns the path the table names (the first
    format's), relative to `root`. Files go through temporary names, so a crash never leaves a complete-looking one."""
    paths = volume_paths(eye_id)
    for name in options.formats:
        target = root / paths[name]
        if name == "folder":
            target.mkdir(parents=True, exist_ok=True)
            for index, bscan in enumerate(stack):
                path = target / slice_name(index, len(stack))
                tmp = path.with_name(path.name + ".tmp")
                Image.fromarray(bscan).save(tmp, format="PNG", compress_level=compress_level)
                os.replace(tmp, path)
        else:
            tmp = target.with_name(target.name + ".tmp")
            tifffile.imwrite(
                tmp, stack, photometric="minisblack", compression="zlib", compressionargs={"level": compress_level},
                metadata=None,
            )  # fmt: skip
            os.replace(tmp, target)
    return paths[options.formats[0]]
