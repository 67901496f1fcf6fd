"""Check an in-memory biomarker table against the schema and report every problem with file, row and column.

`grok.data.table` reads table files and runs this check on read. With an image root, every image the table names is
decoded with the reader of its modality (`grok.data.io`): a missing, truncated or non-image file is a problem.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from grok.data.io import ImageReadError, read_cfp, read_oct
from grok.schema.schema import Biomarker, Schema, SchemaError, load_schema, parse_labels
from grok.schema.units import UNIT_ALTERNATIVES, canonical_unit
from grok.utils.errors import InputError

KEY_COLUMNS = ("subject_id", "eye", "visit")
UNIT_SUFFIX = re.compile(r"^(?P<stem>.+)_(?P<unit>[a-z%]+)$")
# Text that stands for a missing value (as `str(NaN)` or a spreadsheet writes it): never a valid identifier.
MISSING_MARKERS = frozenset({"", "nan", "none", "null", "na", "n/a", "<na>", "#n/a", "-"})
# The image reader of each image column, by the modality its name starts with (oct_path, cfp_path).
IMAGE_READERS = {"oct": read_oct, "cfp": read_cfp}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a table: where it is and what was expected."""

    kind: str
    file: str
    column: str | None
    row: int | None
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.row is not None:
            where += f", row {self.row}"
        if self.column is not None:
            where += f", column '{self.column}'"
        return f"{where}: [{self.kind}] {self.message}"


@dataclass
class ValidationReport:
    """All problems found in one table (empty when the table is valid)."""

    file: str
    rows: int
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems

    def kinds(self) -> set[str]:
        """The distinct kinds of problem found."""
        return {problem.kind for problem in self.problems}

    def summary(self, limit: int = 50) -> str:
        """A readable multi-line summary (at most `limit` problems listed)."""
        if self.ok:
            return f"{self.file}: {self.rows} rows, valid"
        lines = [f"{self.file}: {self.rows} rows, {len(self.problems)} problem(s)"]
        lines += [f"  {problem}" for problem in self.problems[:limit]]
        if len(self.problems) > limit:
            lines.append(f"  ... and {len(self.problems) - limit} more")
        return "\n".join(lines)


class TableValidationError(InputError):
    """Raised by `grok.data.table.read_table` when a table has problems, with the full report attached."""

    def __init__(self, report: ValidationReport) -> None:
        self.report = report
        super().__init__(report.summary())

    @property
    def headline(self) -> str:
        """The report on one line: the file, how many problems, and the first of them."""
        first = self.report.problems[0] if self.report.problems else "no problem listed"
        more = len(self.report.problems) - 1
        tail = f" (+{more} more; grok-validate table=... lists them all)" if more else ""
        return f"{first}{tail}"


def _row_number(index: int, csv: bool) -> int:
    # Rows are counted from 1 as a person reading the file would; a CSV's header is line 1.
    return index + 2 if csv else index + 1


def _unit_problem(name: str, column: str, declared: Biomarker, file: str) -> Problem | None:
    """A column named with another unit than the schema's (e.g. macula_central_mm for macula_central_um)."""
    match = UNIT_SUFFIX.match(column)
    if not match or declared.unit is None:
        return None
    unit = canonical_unit(match["unit"])
    if unit and unit != declared.unit:
        return Problem(
            "wrong_unit",
            file,
            column,
            None,
            f"column is in '{unit}' but the schema declares '{name}' in '{declared.unit}'; convert and rename it",
        )
    return None


def _looks_like_other_unit(values: pd.Series, biomarker: Biomarker) -> str | None:
    """The alternative unit most of the out-of-range values fit, if any (e.g. millimetres for micrometres)."""
    if biomarker.valid_range is None or biomarker.unit not in UNIT_ALTERNATIVES or values.empty:
        return None
    low, high = biomarker.valid_range
    for unit, to_declared in UNIT_ALTERNATIVES[biomarker.unit].items():
        converted = values.map(to_declared)
        if ((converted >= low) & (converted <= high)).mean() > 0.9:
            return unit
    return None


def _iter_column_problems(
    frame: pd.DataFrame, biomarker: Biomarker, column: str, file: str, csv: bool
) -> Iterator[Problem]:
    series = frame[column]
    missing = series.isna().to_numpy()
    if not biomarker.nullable:
        for index in np.flatnonzero(missing):
            yield Problem("missing_value", file, column, _row_number(index, csv), "value is required but missing")
    if biomarker.dtype == "category":
        allowed = set(biomarker.categories)
        present = series[~missing]
        for position in np.flatnonzero(~present.astype(str).isin(allowed).to_numpy()):
            yield Problem(
                "bad_category",
                file,
                column,
                _row_number(frame.index.get_loc(present.index[position]), csv),
                f"value {present.iloc[position]!r} is not one of {sorted(allowed)}",
            )
        return
    values, not_number = _as_numbers(series, missing)
    for index in np.flatnonzero(not_number):
        yield Problem(
            "bad_dtype",
            file,
            column,
            _row_number(index, csv),
            f"value {series.iloc[index]!r} is not a number ({biomarker.dtype} expected)",
        )
    numbers = ~missing & ~not_number
    infinite = numbers & np.isinf(values)
    for index in np.flatnonzero(infinite):
        yield Problem("non_finite", file, column, _row_number(index, csv), f"value {values[index]:g} is not finite")
    if biomarker.dtype == "int":
        for index in np.flatnonzero(numbers & ~infinite & (np.mod(values, 1) != 0)):
            yield Problem(
                "bad_dtype", file, column, _row_number(index, csv), f"value {values[index]:g} is not an integer"
            )
    if biomarker.valid_range is None:
        return
    low, high = biomarker.valid_range
    finite = numbers & ~infinite
    outside = finite & ((values < low) | (values > high))
    if not outside.any():
        return
    other_unit = _looks_like_other_unit(pd.Series(values[finite]), biomarker)
    if other_unit is not None:
        yield Problem(
            "wrong_unit",
            file,
            column,
            None,
            f"values look like '{other_unit}' (e.g. {values[outside][0]:g}) but the schema declares "
            f"'{biomarker.unit}' (valid range {low:g}-{high:g} {biomarker.unit})",
        )
        return
    for index in np.flatnonzero(outside):
        yield Problem(
            "out_of_range",
            file,
            column,
            _row_number(index, csv),
            f"value {values[index]:g} outside the valid range [{low:g}, {high:g}] {biomarker.unit or ''}".rstrip(),
        )


def _as_numbers(series: pd.Series, missing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The column as floats (NaN where missing or not a number) and the mask of present cells that are not numbers."""
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        return series.to_numpy(dtype=float, na_value=np.nan), np.zeros(len(series), dtype=bool)
    numeric = pd.to_numeric(series, errors="coerce")
    values = numeric.to_numpy(dtype=float, na_value=np.nan)
    return values, ~missing & np.isnan(values)


def _integer_problems(series: pd.Series, column: str, file: str, csv: bool) -> Iterator[Problem]:
    """Present cells of an integer identifier that are not whole numbers (text, 1.5, inf)."""
    values, not_number = _as_numbers(series, series.isna().to_numpy())
    with np.errstate(invalid="ignore"):
        fractional = ~np.isnan(values) & (np.isinf(values) | (np.mod(values, 1) != 0))
    for position in np.flatnonzero(not_number | fractional):
        value = series.iloc[position]
        shown = f"{value:g}" if isinstance(value, (float, np.floating)) else repr(value)
        yield Problem("bad_dtype", file, column, _row_number(position, csv), f"value {shown} is not an integer")


def _marker_problems(series: pd.Series, column: str, file: str, csv: bool) -> Iterator[Problem]:
    """Present cells of a text identifier that spell a missing value ('nan', 'None', '', ...)."""
    for position, value in enumerate(series):
        if isinstance(value, str) and value.strip().lower() in MISSING_MARKERS:
            yield Problem(
                "missing_value", file, column, _row_number(position, csv), f"value {value!r} marks a missing value"
            )


def _image_problems(series: pd.Series, column: str, image_root: Path, file: str, csv: bool) -> Iterator[Problem]:
    """Each image of the column that is missing or cannot be decoded by its modality's reader."""
    reader = IMAGE_READERS.get(column.split("_", 1)[0])
    root = str(image_root)
    for position, value in enumerate(series):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        path = os.path.join(root, str(value))
        row = _row_number(position, csv)
        if not os.path.exists(path):
            yield Problem("missing_image", file, column, row, f"image file {image_root / str(value)} does not exist")
            continue
        if reader is None:
            continue
        try:
            reader(path)
        except ImageReadError as error:
            yield Problem("bad_image", file, column, row, f"image file {error.path}: {error.reason}")


def validate_frame(
    frame: pd.DataFrame,
    file: str = "<table>",
    schema: Schema | None = None,
    image_root: Path | None = None,
    csv: bool = False,
) -> ValidationReport:
    """Validate an in-memory table; `image_root` enables the image-file checks (paths are relative to it)."""
    schema = schema or load_schema()
    report = ValidationReport(file=file, rows=len(frame))
    problems = report.problems
    frame = frame.reset_index(drop=True)
    if frame.empty:
        problems.append(Problem("empty_table", file, None, None, "the table has no rows"))
    known = set(schema.biomarkers) | set(schema.identifiers) | set(schema.image_columns) | {schema.label_column}
    renamed = {alias: b.name for b in schema.biomarkers.values() for alias in b.aliases}

    for column in frame.columns:
        if column in known:
            continue
        if column in renamed:
            continue
        unit_problem = next(
            (
                p
                for name, b in schema.biomarkers.items()
                if (m := UNIT_SUFFIX.match(column)) and name.startswith(m["stem"] + "_")
                for p in [_unit_problem(name, column, b, file)]
                if p is not None
            ),
            None,
        )
        problems.append(unit_problem or Problem("unknown_column", file, column, None, "not declared in the schema"))
    frame = frame.rename(columns=renamed)

    for name, spec in schema.identifiers.items():
        if name not in frame.columns:
            if not spec.get("nullable", True):
                problems.append(Problem("missing_column", file, name, None, "required identifier column is absent"))
            continue
        if spec.get("categories"):
            bad = frame[name].dropna().astype(str)
            for position in np.flatnonzero(~bad.isin(spec["categories"]).to_numpy()):
                problems.append(
                    Problem(
                        "bad_category",
                        file,
                        name,
                        _row_number(int(bad.index[position]), csv),
                        f"value {bad.iloc[position]!r} is not one of {spec['categories']}",
                    )
                )
        if not spec.get("nullable", True):
            for position in np.flatnonzero(frame[name].isna().to_numpy()):
                problems.append(Problem("missing_value", file, name, _row_number(position, csv), "value is required"))
        if spec.get("dtype") == "int":
            problems.extend(_integer_problems(frame[name], name, file, csv))
        if spec.get("dtype") == "str":
            problems.extend(_marker_problems(frame[name], name, file, csv))

    for name, biomarker in schema.biomarkers.items():
        if name not in frame.columns:
            if not biomarker.optional:
                problems.append(Problem("missing_column", file, name, None, f"expected {biomarker.display}"))
            continue
        problems.extend(_iter_column_problems(frame, biomarker, name, file, csv))

    keys = [column for column in KEY_COLUMNS if column in frame.columns]
    if {"subject_id", "eye"} <= set(keys):
        duplicated = frame.duplicated(subset=keys, keep="first")
        for position in np.flatnonzero(duplicated.to_numpy()):
            key = tuple(frame.loc[position, keys])
            problems.append(
                Problem("duplicate_key", file, None, _row_number(position, csv), f"duplicate ({', '.join(keys)}) {key}")
            )

    if schema.label_column in frame.columns:
        for position, value in enumerate(frame[schema.label_column]):
            if value is None or (isinstance(value, float) and math.isnan(value)):
                continue
            try:
                parse_labels(value, schema)
            except SchemaError as error:
                problems.append(Problem("bad_label", file, schema.label_column, _row_number(position, csv), str(error)))

    if image_root is not None:
        for column in schema.image_columns:
            if column in frame.columns:
                problems.extend(_image_problems(frame[column], column, image_root, file, csv))
    return report
