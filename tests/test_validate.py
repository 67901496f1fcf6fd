"""The table reader and validator: formats, ids as text, and each kind of bad input reported with its file, row,
column and value."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from grok.data.table import TableReadError, read_table, validate_table
from grok.schema import load_schema
from grok.schema.validate import TableValidationError


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
    loaded = read_table(tmp_path / "table.csv") if _problems(frame, tmp_path).ok else None
    assert loaded is not None and np.isnan(loaded.loc[0, "rnfl_avg_um"])


def test_bad_label_and_category(tmp_path: Path) -> None:
    frame = _valid_table(tmp_path)
    frame.loc[0, "labels"] = "Cataract"
    frame.loc[1, "eye"] = "X"
    kinds = {(p.kind, p.column) for p in _problems(frame, tmp_path).problems}
    assert kinds == {("bad_label", "labels"), ("bad_category", "eye")}


def test_read_table_raises_with_every_problem(tmp_path: Path) -> None:
    frame = _valid_table(tmp_path).assign(foo=1)
    frame.loc[0, "sbp_mmhg"] = 999
    _problems(frame, tmp_path)
    with pytest.raises(TableValidationError) as error:
        read_table(tmp_path / "table.csv")
    assert error.value.report.kinds() == {"unknown_column", "out_of_range"}
    assert "row 2, column 'sbp_mmhg'" in str(error.value) and "999" in str(error.value)
    assert read_table(tmp_path / "table.csv", validate=False)["foo"].tolist() == [1, 1, 1, 1]


@pytest.mark.parametrize("value", [np.inf, -np.inf])
def test_non_finite_values_are_errors(tmp_path: Path, value: float) -> None:
    frame = _valid_table(tmp_path)
    frame.loc[1, "rnfl_avg_um"] = value
    frame.loc[2, "hba1c_mmol_mol"] = value
    report = _problems(frame, tmp_path, "table.parquet")
    assert [(p.kind, p.column, p.row) for p in report.problems] == [
        ("non_finite", "rnfl_avg_um", 2),
        ("non_finite", "hba1c_mmol_mol", 3),
    ]
    assert f"value {value:g} is not finite" in report.problems[0].message


def test_a_table_without_rows_is_an_error(tmp_path: Path) -> None:
    report = _problems(_valid_table(tmp_path).iloc[:0], tmp_path)
    assert [(p.kind, p.row) for p in report.problems] == [("empty_table", None)]


def test_a_visit_that_is_not_a_number_is_an_error(tmp_path: Path) -> None:
    frame = _valid_table(tmp_path).astype({"visit": object})
    frame.loc[3, "visit"] = "baseline"
    report = _problems(frame, tmp_path)
    assert [(p.kind, p.column, p.row) for p in report.problems] == [("bad_dtype", "visit", 5)]


@pytest.mark.parametrize("name", ["table.tsv", "TABLE.CSV", "table.Parquet"])
def test_formats_by_extension_any_case(tmp_path: Path, name: str) -> None:
    frame = _valid_table(tmp_path)
    path = tmp_path / name
    if name.lower().endswith(".parquet"):
        frame.to_parquet(path)
    else:
        frame.to_csv(path, index=False, sep="\t" if name.endswith(".tsv") else ",")
    assert validate_table(path).ok
    pd.testing.assert_frame_equal(read_table(path), frame, check_dtype=False)


def test_subject_ids_stay_text(tmp_path: Path) -> None:
    frame = _valid_table(tmp_path)
    frame["subject_id"] = ["000123", "000123", "0456", "0456"]
    frame.to_csv(tmp_path / "table.csv", index=False)
    assert read_table(tmp_path / "table.csv")["subject_id"].tolist() == ["000123", "000123", "0456", "0456"]
    frame["subject_id"] = [123, 123, 456, 456]
    frame.to_parquet(tmp_path / "table.parquet")
    assert read_table(tmp_path / "table.parquet")["subject_id"].tolist() == ["123", "123", "456", "456"]


def test_unreadable_files_are_named(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_bytes(b"")
    (tmp_path / "table.parquet").write_text("subject_id,eye\nS1,R\n")
    (tmp_path / "table.xlsx").write_bytes(b"x")
    for name, message in (("empty.csv", "as csv"), ("table.parquet", "as parquet"), ("table.xlsx", "unsupported")):
        with pytest.raises(TableReadError, match=message) as error:
            read_table(tmp_path / name)
        assert str(tmp_path / name) in str(error.value)
    with pytest.raises(FileNotFoundError, match=r"set input_table"):
        read_table(tmp_path / "nothing.csv", key="input_table")


def test_a_schema_alias_is_renamed_on_read(tmp_path: Path) -> None:
    import yaml

    raw = yaml.safe_load((Path(load_schema().source_files[0])).read_text(encoding="utf-8"))
    raw["biomarkers"]["rnfl_avg_um"]["aliases"] = ["mrnfl_um"]
    (tmp_path / "biomarkers.yaml").write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    schema = load_schema(biomarkers_path=str(tmp_path / "biomarkers.yaml"))
    _valid_table(tmp_path).rename(columns={"rnfl_avg_um": "mrnfl_um"}).to_csv(tmp_path / "table.csv", index=False)
    table = read_table(tmp_path / "table.csv", schema=schema)
    assert "rnfl_avg_um" in table.columns and "mrnfl_um" not in table.columns
