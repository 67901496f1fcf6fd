"""The one biomarker-table reader: CSV, TSV or Parquet by extension, ids kept as text, checked against the schema.

Every stage that reads a table (`grok-validate`, `grok-generate`, the alignment datamodule) reads it here, and by
default a table with any problem stops the stage with the validator's report (file, row, column, value) before
anything is trained or written.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from grok.schema.schema import Schema, load_schema
from grok.schema.validate import TableValidationError, ValidationReport, validate_frame
from grok.utils.errors import InputError

SEPARATORS = {".csv": ",", ".tsv": "\t"}
FORMATS = (*SEPARATORS, ".parquet")


class TableReadError(InputError):
    """A table file could not be read; the message names the file and why."""


def table_format(path: Path | str) -> str:
    """The table's format from its extension, case-insensitive ('.csv', '.tsv' or '.parquet')."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise TableReadError(f"{path}: unsupported table format '{Path(path).suffix}'; expected one of {FORMATS}")
    return suffix


def text_columns(schema: Schema) -> list[str]:
    """Identifier columns the schema declares as text (e.g. `subject_id`): never parsed as numbers."""
    return [name for name, spec in schema.identifiers.items() if spec.get("dtype") == "str"]


def _read(path: Path, schema: Schema, key: str | None = None) -> pd.DataFrame:
    if not path.is_file():
        hint = f" (set {key}; grok-synth writes the SynthEye table)" if key else ""
        raise FileNotFoundError(f"biomarker table not found: {path}{hint}")
    suffix = table_format(path)
    text = text_columns(schema)
    try:
        if suffix == ".parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, sep=SEPARATORS[suffix], dtype=dict.fromkeys(text, str))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, ValueError) as error:
        raise TableReadError(f"cannot read biomarker table {path} as {suffix[1:]}: {error}") from error
    for column in text:
        if column in frame.columns and not pd.api.types.is_object_dtype(frame[column]):
            frame[column] = frame[column].astype(object).where(frame[column].isna(), frame[column].astype(str))
    return frame


def _report(
    frame: pd.DataFrame, path: Path, schema: Schema, check_images: bool, image_root: Path | str | None
) -> ValidationReport:
    return validate_frame(
        frame,
        file=str(path),
        schema=schema,
        image_root=Path(image_root or path.parent) if check_images else None,
        csv=table_format(path) in SEPARATORS,
    )


def validate_table(
    path: Path | str, schema: Schema | None = None, check_images: bool = True, image_root: Path | str | None = None
) -> ValidationReport:
    """Every problem of a table file; image paths are checked relative to `image_root` (default: the table's folder)."""
    path, schema = Path(path), schema or load_schema()
    return _report(_read(path, schema), path, schema, check_images, image_root)


def read_table(
    path: Path | str,
    validate: bool = True,
    check_images: bool = True,
    image_root: Path | str | None = None,
    schema: Schema | None = None,
    key: str | None = None,
) -> pd.DataFrame:
    """Read a biomarker table; unless `validate` is false, raise `TableValidationError` (with the full report) when
    the schema check finds any problem. Columns named by a schema alias come back under the schema's name; `key`
    (the config key that names the table) is quoted when the file is missing."""
    path, schema = Path(path), schema or load_schema()
    frame = _read(path, schema, key)
    if validate:
        report = _report(frame, path, schema, check_images, image_root)
        if not report.ok:
            raise TableValidationError(report)
    aliases = {alias: b.name for b in schema.biomarkers.values() for alias in b.aliases if alias in frame.columns}
    return frame.rename(columns=aliases) if aliases else frame
