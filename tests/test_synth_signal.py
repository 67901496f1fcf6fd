"""The SynthEye images carry the table's numbers: thickness and cup-to-disc ratio read back from the pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from grok.data.synth import load_appearance
from grok.data.synth.anatomy import INNER_RING_MID_MM, OUTER_RING_MID_MM
from synth_measure import cup_disc_ratio, retinal_thickness_px


def test_retinal_thickness_read_from_the_oct_matches_the_table(syntheye_dir: Path) -> None:
    """ILM-to-Bruch's thickness at the inner/outer ETDRS ring, nasal and temporal, found by intensity edges."""
    manifest = pd.read_json(syntheye_dir / "manifest.json", typ="series")
    um_per_px, width, scan_mm = (manifest["oct"][k] for k in ("axial_um_per_px", "width_px", "scan_width_mm"))
    table = pd.read_parquet(syntheye_dir / "biomarkers.parquet")
    errors = []
    for row in table[~table["labels"].str.contains("AMD")].itertuples():  # AMD drusen lift the RPE locally
        image = np.asarray(Image.open(syntheye_dir / row.oct_path))
        nasal = 1 if row.eye == "R" else -1
        for ring, radius in (("inner", INNER_RING_MID_MM), ("outer", OUTER_RING_MID_MM)):
            for quadrant, side in (("nasal", nasal), ("temporal", -nasal)):
                expected = getattr(row, f"macula_{ring}_{quadrant}_um")
                if pd.isna(expected):
                    continue
                column = int(np.floor((side * radius + scan_mm / 2) / scan_mm * width))
                errors.append(retinal_thickness_px(image, column) * um_per_px - expected)
    errors = np.abs(np.array(errors))
    assert len(errors) > 300
    assert errors.mean() < 6.0 and errors.max() < 12.0  # 1.5 and 3 pixels at 4 um/px


def test_cup_to_disc_ratio_read_from_the_cfp_matches_the_table(syntheye_dir: Path) -> None:
    rim_green = load_appearance()["cfp"]["disc_rim_rgb"][1]
    table = pd.read_parquet(syntheye_dir / "biomarkers.parquet").dropna(subset=["cup_disc_ratio"])
    measured = np.array(
        [cup_disc_ratio(np.asarray(Image.open(syntheye_dir / p)), rim_green) for p in table["cfp_path"]]
    )
    errors = np.abs(measured - table["cup_disc_ratio"].to_numpy())
    assert errors.mean() < 0.04 and errors.max() < 0.12
    glaucoma = table["labels"].str.contains("Glaucoma").to_numpy()
    normal = (table["labels"] == "Normal").to_numpy()
    assert measured[glaucoma].mean() > measured[normal].mean() + 0.25  # the disease is visible in the image
