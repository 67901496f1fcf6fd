"""SynthEye OCT volumes: the central slice is today's B-scan, every slice samples one thickness map that holds the
table's ETDRS values (superior and inferior included), both formats read back, and volumes stay opt-in."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from grok.data.io import read_oct_volume, select_slices
from grok.data.synth import write_syntheye
from grok.data.synth.anatomy import ETDRS_QUADRANTS, INNER_RING_MID_MM, OUTER_RING_MID_MM, macular_thickness_map_um
from grok.data.synth.oct_render import slice_positions_mm
from grok.data.synth.sampling import assign_labels, load_profiles, sample_subject
from grok.schema import load_schema
from synth_measure import retinal_thickness_px

SLICES = 25
VOLUME = {"enabled": True, "num_slices": SLICES, "formats": ["folder", "tiff"]}
OPTIONS = {"class_weights": {"AMD": 1.0, "DiabeticRetinopathy": 1.0, "Glaucoma": 1.0, "Normal": 1.0}}


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same 4 subjects without volumes, with the volume block switched off, and with 25-slice volumes."""
    root = tmp_path_factory.mktemp("synth_volume")
    kwargs = {"n_subjects": 4, "seed": 11, "progress": False, **OPTIONS}
    write_syntheye(root / "plain", **kwargs)
    write_syntheye(root / "off", oct_volume={**VOLUME, "enabled": False}, **kwargs)
    write_syntheye(root / "volume", oct_volume=VOLUME, **kwargs)
    return {name: root / name for name in ("plain", "off", "volume")}


def _files(root: Path, folder: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((root / folder).iterdir())}


def test_volumes_off_leave_the_dataset_byte_identical(datasets: dict[str, Path]) -> None:
    plain, off = datasets["plain"], datasets["off"]
    for name in ("biomarkers.parquet", "manifest.json", "contact_sheet.png"):
        assert (plain / name).read_bytes() == (off / name).read_bytes(), name
    assert _files(plain, "oct") == _files(off, "oct") and _files(plain, "cfp") == _files(off, "cfp")
    assert not (off / "oct_volume").exists()


def test_central_slice_is_todays_single_bscan(datasets: dict[str, Path]) -> None:
    plain, volume = datasets["plain"], datasets["volume"]
    assert _files(plain, "oct") == _files(volume, "oct") and _files(plain, "cfp") == _files(volume, "cfp")
    table = pd.read_parquet(volume / "biomarkers.parquet")
    pd.testing.assert_frame_equal(table.drop(columns="oct_volume_path"), pd.read_parquet(plain / "biomarkers.parquet"))
    for row in table.itertuples():
        eye_id = f"{row.subject_id}_{row.eye}"
        single = (plain / row.oct_path).read_bytes()
        assert (volume / "oct_volume" / eye_id / "slice_012.png").read_bytes() == single  # same PNG, same bytes
        stack = read_oct_volume(volume / "oct_volume" / f"{eye_id}.tif")
        assert stack.shape == (SLICES, 224, 224) and stack.dtype == np.uint8
        assert np.array_equal(stack[SLICES // 2], np.asarray(Image.open(plain / row.oct_path)))
        assert not np.array_equal(stack[0], stack[SLICES // 2])


def test_layout_table_column_manifest_and_validation(datasets: dict[str, Path]) -> None:
    from grok.data.table import validate_table

    root = datasets["volume"]
    table = pd.read_parquet(root / "biomarkers.parquet")
    assert list(table.columns[4:7]) == ["oct_path", "cfp_path", "oct_volume_path"]
    assert (table["oct_volume_path"] == "oct_volume/" + table["subject_id"] + "_" + table["eye"]).all()
    folder = read_oct_volume(root / table["oct_volume_path"].iloc[0])
    tiff = read_oct_volume(root / (table["oct_volume_path"].iloc[0] + ".tif"))
    assert np.array_equal(folder, tiff)  # the two formats hold the same stack
    manifest = json.loads((root / "manifest.json").read_text())
    volume = manifest["oct_volume"]
    assert (
        volume["num_slices"] == SLICES and volume["central_slice"] == 12 and volume["table_column"] == "oct_volume_path"
    )
    assert volume["slice_positions_mm"][0] == pytest.approx(2.88) and volume["slice_positions_mm"][12] == 0.0
    assert manifest["parameters"]["oct_volume"]["num_slices"] == SLICES
    report = validate_table(root / "biomarkers.parquet")  # reads every volume's central slice
    assert report.ok, report.summary()
    plain = Image.open(datasets["plain"] / "contact_sheet.png")
    sheet = Image.open(root / "contact_sheet.png")
    assert sheet.height == plain.height + 18 + 224 + 16 + 6  # one more row: slices of a volume


def test_one_thickness_map_holds_every_etdrs_subfield_of_the_table() -> None:
    """The map at each ring's mid-eccentricity on each quadrant's axis is the table's subfield value (0.1 um rounding,
    and the foveal pit's tail at 1 mm), so superior and inferior differ as the table says."""
    schema, profiles = load_schema(), load_profiles()
    labels = assign_labels(6, 5, {name: 1.0 for name in schema.label_names}, 0.0, [])
    pit = profiles["layers"]["pit_sigma_mm"]
    axes = {"superior": (0.0, 1.0), "nasal": (1.0, 0.0), "inferior": (0.0, -1.0), "temporal": (-1.0, 0.0)}
    gaps = []
    for index, label_set in enumerate(labels):
        for eye in sample_subject(index, label_set, 5, profiles, schema).eyes.values():
            for ring, radius in (("inner", INNER_RING_MID_MM), ("outer", OUTER_RING_MID_MM)):
                for quadrant in ETDRS_QUADRANTS:
                    dx, dy = axes[quadrant]
                    for turn in (-0.4, 0.0, 0.4):  # anywhere inside the quadrant's sector, not only on its axis
                        x = radius * (dx * np.cos(turn) - dy * np.sin(turn))
                        y = radius * (dx * np.sin(turn) + dy * np.cos(turn))
                        offsets = eye.rnfl_quadrant_offsets
                        value = macular_thickness_map_um(eye.layers, offsets, np.array([x]), y, pit, 30.0)
                        gaps.append(value[0] - eye.biomarkers[f"macula_{ring}_{quadrant}_um"])
    assert np.abs(gaps).max() < 1.0


def test_superior_and_inferior_thickness_read_from_the_volume_match_the_table(datasets: dict[str, Path]) -> None:
    """ILM-to-Bruch's thickness by intensity edges where the slices nearest y = +-1.0 and +-2.25 mm cross the rings."""
    root = datasets["volume"]
    manifest = json.loads((root / "manifest.json").read_text())
    positions = np.array(manifest["oct_volume"]["slice_positions_mm"])
    width, scan_mm, um_per_px = (manifest["oct"][k] for k in ("width_px", "scan_width_mm", "axial_um_per_px"))
    table = pd.read_parquet(root / "biomarkers.parquet")
    errors, differences = [], []
    for row in table[~table["labels"].str.contains("AMD")].itertuples():  # AMD drusen lift the RPE locally
        stack = read_oct_volume(root / row.oct_volume_path)
        for ring, radius in (("inner", INNER_RING_MID_MM), ("outer", OUTER_RING_MID_MM)):
            measured = {}
            for quadrant, sign in (("superior", 1.0), ("inferior", -1.0)):
                k = int(np.argmin(np.abs(positions - sign * radius)))
                x = np.sqrt(radius**2 - positions[k] ** 2)
                columns = [int(np.floor((side * x + scan_mm / 2) / scan_mm * width)) for side in (-1, 1)]
                measured[quadrant] = np.mean([retinal_thickness_px(stack[k], c) * um_per_px for c in columns])
                expected = getattr(row, f"macula_{ring}_{quadrant}_um")
                errors.append(measured[quadrant] - expected)
            table_gap = getattr(row, f"macula_{ring}_superior_um") - getattr(row, f"macula_{ring}_inferior_um")
            differences.append((measured["superior"] - measured["inferior"], table_gap))
    errors = np.abs(np.array(errors))
    assert len(errors) >= 16 and errors.mean() < 6.0 and errors.max() < 12.0  # as the central B-scan's test
    measured_gap, table_gap = np.array(differences).T
    assert np.abs(measured_gap - table_gap).mean() < 3.0  # 60 subjects: 0.9 um, correlation 0.97


def test_slice_positions_and_selection_on_a_synth_volume() -> None:
    positions = slice_positions_mm(7, 6.0)
    assert positions[3] == 0.0 and positions[0] > 0 > positions[-1]
    assert select_slices(25, 7) == [0, 4, 8, 12, 16, 20, 24] and select_slices(25, "central") == [12]
    assert slice_positions_mm(8, 6.0)[4] == 0.0  # even counts: slice n // 2 is still the foveal one


@pytest.mark.parametrize(
    ("block", "error", "match"),
    [
        ({"enabled": True, "num_slices": 0}, ValueError, r"options\.oct_volume\.num_slices=0"),
        ({"enabled": True, "formats": ["png"]}, ValueError, r"options\.oct_volume\.formats=\['png'\]"),
        ({"enabled": True, "slices": 7}, TypeError, r"options\.oct_volume\.slices"),
    ],
)
def test_bad_volume_options_name_the_key(tmp_path: Path, block: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        write_syntheye(tmp_path, n_subjects=1, progress=False, oct_volume=block)


def test_grok_synth_prints_the_volume_cost(make_config, capsys: pytest.CaptureFixture[str]) -> None:
    from grok.cli.synth import main

    overrides = ["n_subjects=1", "num_workers=0", "progress=false", "options.oct_volume.enabled=true",
                 "options.oct_volume.num_slices=3", "options.oct_volume.formats=[tiff]"]  # fmt: skip
    cfg = make_config("synth", overrides)
    main.__wrapped__(cfg)
    printed = capsys.readouterr().out
    assert "OCT volumes:" in printed and "s per eye to render and write" in printed
    table = pd.read_parquet(Path(cfg.output_dir) / "biomarkers.parquet")
    assert table["oct_volume_path"].str.endswith(".tif").all()
    assert read_oct_volume(Path(cfg.output_dir) / table["oct_volume_path"].iloc[0]).shape == (3, 224, 224)
