"""The one biomarker-table reader: CSV, TSV or Parquet by extension, ids kept as text, checked against the schema.

Every stage that reads a table (`grok-validate`, `grok-generate`, the alignment datamodule) reads it here, and by
default a table with any problem stops the stage with the validator's report (file, row, column, value) before
anything is trained or written. A file that cannot be read as a table (empty, not its extension's format, another
separator than its extension's, rows longer than the header) raises `TableReadError` naming the file and the fix.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from pyarrow import ArrowException

from grok.schema.schema import Schema, load_schema
from grok.schema.validate import TableValidationError, ValidationReport, validate_frame
from grok.utils.errors import InputError

SEPARATORS = {".csv": ",", ".tsv": "\t"}
FORMATS = (*SEPARATORS, ".parquet")
PARQUET_MAGIC = b"PAR1"  # the first (and last) four bytes of every Parquet file
ZIP_MAGIC = b"PK\x03\x04"  # an Excel workbook (.xlsx) is a ZIP archive
SEPARATOR_NAMES = {",": "comma", "\t": "tab", ";": "semicolon", "|": "pipe"}


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


def _sniff(head: bytes) -> str | None:
    """What a file's first bytes say it is: 'parquet', 'an Excel/ZIP file', 'text' or None (unknown binary)."""
    if head == PARQUET_MAGIC:
        return "parquet"
    if head == ZIP_MAGIC:
        return "an Excel/ZIP file"
    return "text" if head.isascii() else None


def _content_problem(path: Path, suffix: str) -> str | None:
    """Why the file's first bytes do not fit its extension's format (None when they do)."""
    with open(path, "rb") as handle:
        head = handle.read(len(PARQUET_MAGIC))
    if not head:
        return "the file is empty (0 bytes); expected a header row"
    kind = _sniff(head)
    if suffix == ".parquet" and kind != "parquet":
        looks = {"text": "; it looks like text (a CSV? name it .csv)", None: ""}.get(kind, f"; it is {kind}")
        return f"it is not a Parquet file (no 'PAR1' magic bytes){looks}"
    if suffix != ".parquet" and kind == "parquet":
        return "it is a Parquet file, not text: name it .parquet"
    if suffix != ".parquet" and kind == "an Excel/ZIP file":
        return f"it is {kind}, not text: export it as CSV or Parquet"
    return None


def _separator_problem(frame: pd.DataFrame, suffix: str) -> str | None:
    """Why a CSV/TSV read as one column looks written with another separator (None when it does not)."""
    if len(frame.columns) != 1:
        return None
    header = str(frame.columns[0])
    found = [sep for sep in SEPARATOR_NAMES if sep != SEPARATORS[suffix] and sep in header]
    if not found:
        return None
    expected = SEPARATOR_NAMES[SEPARATORS[suffix]]
    return (
        f"the header is one column holding {SEPARATOR_NAMES[found[0]]}s: the file looks "
        f"{SEPARATOR_NAMES[found[0]]}-separated but a {suffix} file must be {expected}-separated"
    )


def _read_parquet(path: Path) -> pd.DataFrame:
    """A Parquet file as a frame; a file that starts like Parquet but cannot be parsed is named corrupt or truncated."""
    try:
        return pd.read_parquet(path)
    except (ArrowException, OSError) as error:
        raise ValueError(f"corrupt or truncated Parquet file ({str(error).strip()})") from error


def _read_file(path: Path, suffix: str, text: list[str]) -> pd.DataFrame:
    """The file as a frame; every reason it cannot be read raises a `TableReadError` naming the file."""

    def fail(reason: object) -> TableReadError:
        return TableReadError(f"cannot read biomarker table {path} as {suffix[1:]}: {str(reason).strip()}")

    problem = _content_problem(path, suffix)
    if problem:
        raise fail(problem)
    try:
        if suffix == ".parquet":
            return _read_parquet(path)
        frame = pd.read_csv(path, sep=SEPARATORS[suffix], dtype=dict.fromkeys(text, str))
    except pd.errors.EmptyDataError as error:
        raise fail("the file holds no header row (only blank lines)") from error
    except UnicodeDecodeError as error:
        byte = error.object[error.start]
        raise fail(f"not UTF-8 text (byte {byte:#04x} at offset {error.start}); save it as UTF-8") from error
    except (pd.errors.ParserError, ArrowException, OSError, ValueError) as error:
        raise fail(error) from error
    problem = _separator_problem(frame, suffix)
    if problem:
        raise fail(problem)
    if not isinstance(frame.index, pd.RangeIndex):  # pandas makes the extra leading fields of long rows the index
        columns = len(frame.columns)
        raise fail(f"data rows have more fields than the header's {columns} (a stray separator or a missing name?)")
    return frame


def _read(path: Path, schema: Schema, key: str | None = None) -> pd.DataFrame:
    if not path.is_file():
        hint = f" (set {key}; grok-synth writes the SynthEye table)" if key else ""
        raise FileNotFoundError(f"biomarker table not found: {path}{hint}")
    suffix = table_format(path)
    text = text_columns(schema)
    frame = _read_file(path, suffix, text)
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
