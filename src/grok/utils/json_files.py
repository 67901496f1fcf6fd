"""Reading JSON as untrusted input: a JSONL line or a JSON file as one object, or an error naming where and why."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from grok.utils.errors import InputError


def object_of_line(raw: bytes, where: str, error: type[InputError]) -> dict[str, Any]:
    """One JSONL line (`where`: `file:line`) as a JSON object; anything else raises `error` naming `where`."""
    try:
        record = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as failure:
        raise error(f"{where}: not UTF-8 text (byte {failure.start}); expected a JSON object") from None
    except json.JSONDecodeError as failure:
        raise error(
            f"{where}: not valid JSON ({failure.msg}, column {failure.colno}); expected one JSON object per line"
        ) from failure
    if not isinstance(record, dict):
        raise error(f"{where}: expected a JSON object, got {type(record).__name__}")
    return record


def read_json_file(path: Path, error: type[InputError], expected: str) -> Any:
    """The JSON value of a file; text that is not JSON raises `error` naming the file and `expected` (what wrote it)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as failure:
        raise error(f"{path}: not valid JSON ({failure}); expected {expected}") from failure
