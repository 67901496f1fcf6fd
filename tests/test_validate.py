"""The table validator reports each kind of bad input with its file, row and column."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from grok.schema import load_schema
from grok.schema.validate import TableValidationError, require_valid, validate_table


def _valid_table(folder: Path, rows: int = 4) -> pd.DataFrame:
    """A small table whose every value is the midpoint of its reference (or valid) range, with real image files."""
    schema = load_schema()
    (folder / "oct").mkdir(parents=True, exist_ok=True)
    (folder / "cfp").mkdir(exist_ok=True)
    records = []
    for index in range(rows):
        subject, eye = f"S{index // 2:06d}", "RL"[index % 2]
        record: dict[str, object] = {"subject_id": subject, "eye": eye, "visit": 0}
        for name, biomarker in schema.biomarkers.items():
            if biomarker.dtype == "category":
                record[name] = biomarker.categories[0]
            elif biomarker.reference is not None:
                record[name] = (biomarker.reference.low + biomarker.reference.high) / 2
            else:
                record[name] = sum(biomarker.valid_range) / 2
        for column in ("oct", "cfp"):
            relative = f"{column}/{subject}_{eye}.png"
            Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / relative)
            record[f"{column}_path"] = relative
        record["labels"] = "Normal"
        records.append(record)
    return pd.DataFrame.from_records(records)


def _problems(frame: pd.DataFrame, folder: Path, name: str = "table.csv"):
    path = folder / name
    frame.to_csv(path, index=False) if name.endswith(".csv") else frame.to_parquet(path)
    return validate_table(path)


def test_valid_table_has_no_problems(tmp_path: Path) -> None:
    report = _problems(_valid_table(tmp_path), tmp_path, "table.parquet")
    assert report.ok, report.summary()


def test_unknown_column(tmp_path: Path) -> None:
    frame = _valid_table(tmp_path).assign(intraocular_pressure=15.0)
    report = _problems(frame, tmp_path)
    assert [(p.kind, p.column) for p in report.problems] == [("unknown_column", "intraocular_pressure")]
    assert str(tmp_path / "table.csv") in str(report.problems[0])


def test_missing_column(tmp_path: Path) -> None:
    report = _problems(_valid_table(tmp_path).drop(columns=["rnfl_avg_um"]), tmp_path)
    assert [(p.kind, p.column) for p in report.problems] == [("missing_column", "rnfl_avg_um")]


def test_millimetres_where_micrometres_are_declared(tmp_path: Path) -> None:
    frame = _valid_table(tmp_path)
    frame["macula_central_um"] = frame["macula_central_um"] / 1000.0
    report = _problems(frame, tmp_path)
    assert [(p.kind, p.column) for p in report.problems] == [("wrong_unit", "macula_central_um")]
    assert "'mm'" in report.problems[0].message and "'um'" in report.problems[0].message


def test_a_column_named_in_another_unit(tmp_path: Path) -> None:
    frame = _valid_table(tmp_path).rename(columns={"rnfl_avg_um": "rnfl_avg_mm"})
    kinds = {(p.kind, p.column) for p in _problems(frame, tmp_path).problems}
    assert ("wrong_unit", "rnfl_avg_mm") in kinds and ("missing_column", "rnfl_avg_um") in kinds


def test_out_of_range_value_names_row_and_column(tmp_path: Path) -> None:
    frame = _valid_table(tmp_path)
    frame.loc[2, "cup_disc_ratio"] = 1.4
    report = _problems(frame, tmp_path)
    assert [(p.kind, p.column, p.row) for p in report.problems] == [("out_of_range", "cup_disc_ratio", 4)]
    assert "1.4" in report.problems[0].message  # CSV line 4 = header + third data row


def test_duplicate_subject_eye_visit(tmp_path: Path) -> None:
    frame = _valid_table(tmp_path)
    frame = pd.concat([frame, frame.iloc[[1]]], ignore_index=True)
    report = _problems(frame, tmp_path, "table.parquet")
    assert [(p.kind, p.row) for p in report.problems] == [("duplicate_key", 5)]
    assert "S000000" in report.problems[0].message


def test_missing_image_file(tmp_path: Path) -> None:
    frame = _valid_table(tmp_path)
    (tmp_path / frame.loc[0, "cfp_path"]).unlink()
    report = _problems(frame, tmp_path)
    assert [(p.kind, p.column, p.row) for p in report.problems] == [("missing_image", "cfp_path", 2)]


def test_missing_values_are_allowed_where_nullable_and_stay_missing(tmp_path: Path) -> None:
    frame = _valid_table(tmp_path)
    frame.loc[0, "rnfl_avg_um"] = np.nan
    frame.loc[1, "age_years"] = np.nan
    report = _problems(frame, tmp_path)
    assert [(p.kind, p.column, p.row) for p in report.problems] == [("missing_value", "age_years", 3)]
    frame.loc[1, "age_years"] = 60.0
    loaded = require_valid(tmp_path / "table.csv") if _problems(frame, tmp_path).ok else None
    assert loaded is not None and np.isnan(loaded.loc[0, "rnfl_avg_um"])


def test_bad_label_and_category(tmp_path: Path) -> None:
    frame = _valid_table(tmp_path)
    frame.loc[0, "labels"] = "Cataract"
    frame.loc[1, "eye"] = "X"
    kinds = {(p.kind, p.column) for p in _problems(frame, tmp_path).problems}
    assert kinds == {("bad_label", "labels"), ("bad_category", "eye")}


def test_require_valid_raises_with_every_problem(tmp_path: Path) -> None:
    frame = _valid_table(tmp_path).assign(foo=1)
    frame.loc[0, "sbp_mmhg"] = 999
    _problems(frame, tmp_path)
    with pytest.raises(TableValidationError) as error:
        require_valid(tmp_path / "table.csv")
    assert error.value.report.kinds() == {"unknown_column", "out_of_range"}
