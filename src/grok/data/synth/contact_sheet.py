"""A contact sheet for people: a few eyes per label, OCT beside CFP, each captioned with its key numbers; with OCT
volumes, a last row of evenly spaced slices of one eye's volume, superior to inferior."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from grok.data.io import read_oct_volume, select_slices

TILE_HEIGHT = 224
GAP = 6
HEADER = 18
CAPTION = 16
CAPTION_COLUMNS = (("macula_central_um", "CST", "{:.0f}um"), ("rnfl_avg_um", "RNFL", "{:.0f}um"),
                   ("cup_disc_ratio", "CDR", "{:.2f}"), ("av_ratio", "AVR", "{:.2f}"))  # fmt: skip


def _fmt(value: object, pattern: str) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else pattern.format(value)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def _scaled(image: Image.Image, height: int) -> Image.Image:
    return image.resize((max(1, round(image.width * height / image.height)), height), Image.Resampling.BILINEAR)


def _volume_row(
    row: pd.Series, root: Path, column: str, count: int, positions_mm: Sequence[float]
) -> tuple[list[tuple[Image.Image, str]], str]:
    """Tiles of `count` evenly spaced slices of the row's volume (captioned with index and position) and a header."""
    stack = read_oct_volume(root / row[column])
    chosen = select_slices(
        len(stack), min(count, len(stack)), root / row[column], key="oct_volume.contact_sheet_slices"
    )
    tiles = []
    for index in chosen:
        where = f"y {positions_mm[index]:+.2f} mm" if index < len(positions_mm) else ""
        tiles.append((_scaled(Image.fromarray(stack[index]).convert("RGB"), TILE_HEIGHT), f"slice {index}  {where}"))
    header = f"OCT volume {row['subject_id']}_{row['eye']} [{row['labels']}]: {len(stack)} slices, superior to inferior"
    return tiles, header


def write_contact_sheet(
    frame: pd.DataFrame,
    root: Path,
    out_path: Path,
    per_label: int = 2,
    label_order: Sequence[str] = (),
    volume_column: str | None = None,
    volume_slices: int = 5,
    slice_positions_mm: Sequence[float] | np.ndarray = (),
) -> Path:
    """Write a PNG grid: one row per label (subjects whose first label it is), `per_label` eyes per row; with a
    `volume_column`, a last row of `volume_slices` evenly spaced slices of the volume of the sheet's first eye."""
    order = list(label_order) or sorted(frame["labels"].str.split(";").str[0].unique())
    primary = frame["labels"].str.split(";").str[0]
    picks = {label: frame[primary == label].head(per_label) for label in order}
    tile_width = 0
    tiles: dict[str, list[tuple[Image.Image, str]]] = {}
    for label, rows in picks.items():
        tiles[label] = []
        for row in rows.itertuples(index=False):
            oct_image = _scaled(Image.open(root / row.oct_path).convert("RGB"), TILE_HEIGHT)
            cfp_image = _scaled(Image.open(root / row.cfp_path).convert("RGB"), TILE_HEIGHT)
            pair = Image.new("RGB", (oct_image.width + GAP + cfp_image.width, TILE_HEIGHT))
            pair.paste(oct_image, (0, 0))
            pair.paste(cfp_image, (oct_image.width + GAP, 0))
            numbers = "  ".join(
                f"{short} {_fmt(getattr(row, column), pattern)}" for column, short, pattern in CAPTION_COLUMNS
            )
            caption = f"{row.subject_id}_{row.eye}  [{row.labels}]  {numbers}"
            tiles[label].append((pair, caption))
            tile_width = max(tile_width, pair.width)
    volume_tiles: list[tuple[Image.Image, str]] = []
    volume_header = ""
    shown = next((rows.iloc[0] for rows in picks.values() if len(rows)), None)
    if volume_column and volume_slices > 0 and shown is not None:
        volume_tiles, volume_header = _volume_row(shown, root, volume_column, volume_slices, list(slice_positions_mm))
    width = max(GAP + per_label * (tile_width + GAP), GAP + sum(tile.width + GAP for tile, _ in volume_tiles))
    rows = len(order) + (1 if volume_tiles else 0)
    height = GAP + rows * (HEADER + TILE_HEIGHT + CAPTION + GAP)
    sheet = Image.new("RGB", (max(width, 320), height), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    header_font, caption_font = _font(15), _font(11)
    y = GAP
    for label in order:
        draw.text(
            (GAP, y),
            label if tiles[label] else f"{label} (no subject with this label)",
            fill=(255, 255, 255),
            font=header_font,
        )
        for column, (pair, caption) in enumerate(tiles[label]):
            x = GAP + column * (tile_width + GAP)
            sheet.paste(pair, (x, y + HEADER))
            draw.text((x, y + HEADER + TILE_HEIGHT + 2), caption, fill=(210, 210, 210), font=caption_font)
        y += HEADER + TILE_HEIGHT + CAPTION + GAP
    if volume_tiles:
        draw.text((GAP, y), volume_header, fill=(255, 255, 255), font=header_font)
        x = GAP
        for tile, caption in volume_tiles:
            sheet.paste(tile, (x, y + HEADER))
            draw.text((x, y + HEADER + TILE_HEIGHT + 2), caption, fill=(210, 210, 210), font=caption_font)
            x += tile.width + GAP
    tmp = out_path.with_name(out_path.name + ".tmp")
    sheet.save(tmp, format="PNG")
    os.replace(tmp, out_path)
    return out_path
