"""SynthEye: schema-valid tables, determinism, disease signal, overwrite safety, the grok-synth entry point."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from grok.data.synth import label_counts, write_syntheye
from grok.data.synth.sampling import assign_labels, load_profiles
from grok.schema import load_schema
from grok.schema.schema import parse_labels

SCHEMA = load_schema()


@pytest.fixture(scope="module")
def table(syntheye_dir: Path) -> pd.DataFrame:
    return pd.read_parquet(syntheye_dir / "biomarkers.parquet")


def test_layout_and_every_schema_column_in_range(syntheye_dir: Path, table: pd.DataFrame) -> None:
    assert len(table) == 120 and table["subject_id"].nunique() == 60
    assert (table.groupby("subject_id")["eye"].agg(lambda eyes: "".join(sorted(eyes))) == "LR").all()
    assert table["subject_id"].str.fullmatch(r"S\d{6}").all()
    for name, biomarker in SCHEMA.biomarkers.items():
        assert name in table.columns, name
        values = table[name]
        if biomarker.dtype == "category":
            assert set(values) <= set(biomarker.categories), name
            continue
        present = values.dropna().astype(float)
        low, high = biomarker.valid_range
        assert ((present >= low) & (present <= high)).all(), name
        if not biomarker.nullable:
            assert values.notna().all(), name
    for row in table.itertuples():
        assert parse_labels(row.labels), row.labels
        assert (syntheye_dir / row.oct_path).is_file() and (syntheye_dir / row.cfp_path).is_file()
    assert set(label_counts(table)) == set(SCHEMA.label_names)  # every class has examples in a small set


def test_missing_values_only_where_nullable_and_rare(table: pd.DataFrame) -> None:
    measured = [b.name for b in SCHEMA.by_modality("oct", "cfp")]
    missing = table[measured].isna().to_numpy().mean()
    assert 0.0 < missing < 0.05
    assert table[["age_years", "sex", "subject_id", "eye", "labels"]].notna().all().all()


def test_table_validates_under_the_schema_validator(syntheye_dir: Path) -> None:
    from grok.data.table import validate_table

    report = validate_table(syntheye_dir / "biomarkers.parquet")
    assert report.ok, report.summary()


def test_layer_bands_are_internally_consistent(table: pd.DataFrame) -> None:
    for zone in ("central", "inner", "outer", "avg"):
        parts = table[f"inl_elm_{zone}_um"] + table[f"elm_isos_{zone}_um"] + table[f"isos_rpe_{zone}_um"]
        difference = (table[f"inl_rpe_{zone}_um"] - parts).dropna().abs()
        assert (difference < 0.2).all(), zone
    inner = table[[f"macula_inner_{q}_um" for q in ("superior", "nasal", "inferior", "temporal")]].mean(axis=1)
    assert ((inner - table["macula_central_um"]).dropna() > -80).all()


def test_disease_signal_in_the_table(table: pd.DataFrame) -> None:
    by_label = table.assign(label=table["labels"].str.split(";").str[0]).groupby("label")
    mean = by_label.mean(numeric_only=True)
    assert mean.loc["Glaucoma", "cup_disc_ratio"] > mean.loc["Normal", "cup_disc_ratio"] + 0.25
    assert mean.loc["Glaucoma", "rnfl_avg_um"] < mean.loc["Normal", "rnfl_avg_um"] - 5
    assert mean.loc["DiabeticRetinopathy", "macula_central_um"] > mean.loc["Normal", "macula_central_um"] + 30
    assert mean.loc["AMD", "rpe_avg_um"] > mean.loc["Normal", "rpe_avg_um"] + 4
    assert mean.loc["Alzheimer", "arterial_fractal_dim"] < mean.loc["Normal", "arterial_fractal_dim"]
    assert mean.loc["Hypertension", "av_ratio"] < mean.loc["Normal", "av_ratio"]
    assert (by_label.get_group("Hypertension")["sbp_mmhg"] >= 140).all()
    assert (by_label.get_group("Diabetes")["hba1c_mmol_mol"] >= 48).all()
    assert (by_label.get_group("Normal")[["sbp_mmhg", "hba1c_mmol_mol"]].lt([140, 42]).all()).all()
    assert (by_label.get_group("DiabeticRetinopathy")["microaneurysm_count"] > 0).all()
    assert (by_label.get_group("AMD")["drusen_count"] > 0).all()
    lesions = ["microaneurysm_count", "haemorrhage_count", "hard_exudate_count", "drusen_count"]
    assert (by_label.get_group("Normal")[lesions] == 0).all().all()


def _dataset_bytes(root: Path) -> dict[str, bytes]:
    files = [root / "biomarkers.parquet", *sorted((root / "oct").glob("*.png")), *sorted((root / "cfp").glob("*.png"))]
    return {str(path.relative_to(root)): path.read_bytes() for path in files}


def test_same_seed_same_bytes_serial_or_parallel_and_new_seed_differs(tmp_path: Path) -> None:
    write_syntheye(tmp_path / "a", n_subjects=5, seed=3, progress=False)
    write_syntheye(tmp_path / "b", n_subjects=5, seed=3, progress=False, num_workers=2, chunk_size=2)
    write_syntheye(tmp_path / "c", n_subjects=5, seed=4, progress=False)
    first, second, third = (_dataset_bytes(tmp_path / name) for name in "abc")
    assert len(first) == 21 and first == second
    assert (tmp_path / "a" / "manifest.json").read_bytes() == (tmp_path / "b" / "manifest.json").read_bytes()
    assert first["biomarkers.parquet"] != third["biomarkers.parquet"]
    assert first["oct/S000000_R.png"] != third["oct/S000000_R.png"]


def test_overwrite_refused_unless_asked(tmp_path: Path) -> None:
    out = tmp_path / "syntheye"
    write_syntheye(out, n_subjects=2, seed=1, progress=False, contact_sheet_per_label=1)
    write_syntheye(out, n_subjects=2, seed=1, progress=False, contact_sheet_per_label=1)  # same dataset: fine
    with pytest.raises(FileExistsError, match=r"different SynthEye dataset.*overwrite=true"):
        write_syntheye(out, n_subjects=3, seed=1, progress=False)
    assert json.loads((out / "manifest.json").read_text())["subjects"] == 2  # untouched
    write_syntheye(out, n_subjects=1, seed=1, progress=False, overwrite=True)
    assert sorted(p.name for p in (out / "oct").iterdir()) == ["S000000_L.png", "S000000_R.png"]
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a SynthEye dataset"):
        write_syntheye(foreign, n_subjects=1, seed=1, progress=False)


def test_unknown_option_is_named(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="oct_size"):
        write_syntheye(tmp_path, n_subjects=1, oct_size=128)


def test_contact_sheet_and_manifest(syntheye_dir: Path) -> None:
    from PIL import Image

    sheet = Image.open(syntheye_dir / "contact_sheet.png")
    assert sheet.mode == "RGB" and sheet.height > 7 * 224  # one row per label
    manifest = json.loads((syntheye_dir / "manifest.json").read_text())
    assert manifest["oct"]["axial_um_per_px"] == 4.0 and manifest["rows"] == 120
    assert manifest["parameters"]["seed"] == 7


def test_class_weights_and_multilabel_assignment() -> None:
    combos = load_profiles()["multilabel_combinations"]
    labels = assign_labels(14, 0, {"Glaucoma": 1.0, "Normal": 1.0, "AMD": 0.0}, 0.0, combos)
    assert sorted(s[0] for s in labels) == ["Glaucoma"] * 7 + ["Normal"] * 7
    multi = assign_labels(40, 0, {name: 1.0 for name in SCHEMA.label_names}, 1.0, combos)
    diseases = [s for s in multi if s[0] != "Normal"]
    assert all(len(s) == 2 for s in diseases) and all(len(s) == 1 for s in multi if s[0] == "Normal")


def test_multilabel_subjects_carry_both_signals(tmp_path: Path) -> None:
    table_path = write_syntheye(tmp_path, n_subjects=8, seed=2, progress=False, multilabel_fraction=1.0,
                                class_weights={"Glaucoma": 1.0})  # fmt: skip
    table = pd.read_parquet(table_path)
    labels = table["labels"].str.split(";")
    assert (labels.str.len() == 2).all() and (labels.str[0] == "Glaucoma").all()
    assert table["cup_disc_ratio"].mean() > 0.6
    assert (table.loc[table["labels"].str.contains("Hypertension"), "sbp_mmhg"] >= 140).all()
    assert (table.loc[table["labels"].str.contains("Diabetes"), "hba1c_mmol_mol"] >= 48).all()


def test_grok_synth_entry_point(make_config, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from grok.cli.synth import main

    cfg = make_config("synth", ["n_subjects=3", "num_workers=0", "progress=false"])
    assert cfg.output_dir == str(tmp_path / "data" / "syntheye")
    main.__wrapped__(cfg)
    printed = capsys.readouterr().out
    assert "6 eyes of 3 subjects" in printed and "wall time" in printed
    assert math.isclose(pd.read_parquet(Path(cfg.output_dir) / "biomarkers.parquet")["visit"].sum(), 0)
    assert np.all(pd.read_parquet(Path(cfg.output_dir) / "biomarkers.parquet")["eye"].isin(["R", "L"]))
