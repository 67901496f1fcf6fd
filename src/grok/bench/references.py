"""Reference records of the benchmark: one `task == "report"` record per eye from the stage-one test JSONL."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grok.schema.schema import Schema, load_schema
from grok.utils.errors import InputError


class ReferenceError(InputError):
    """The reference dataset is unusable; the message names the file and line."""


@dataclass(frozen=True)
class Reference:
    """The ground truth for one eye: the reference report, the labels and the structured facts."""

    id: str
    text: str
    labels: tuple[str, ...]
    facts: Mapping[str, Any] = field(default_factory=dict)
    style: str | None = None

    @property
    def eye(self) -> str | None:
        """'R' or 'L' from an eye id like 'S000123_R' (None when the id carries no side)."""
        side = self.id.rsplit("_", 1)[-1] if "_" in self.id else ""
        return side if side in ("R", "L") else None


def _reference_text(record: Mapping[str, Any], where: str) -> str:
    turns = record.get("conversations") or []
    answers = [turn.get("value", "") for turn in turns if turn.get("from") == "gpt"]
    if not answers or not answers[0].strip():
        raise ReferenceError(f"{where}: report record has no non-empty 'gpt' turn in 'conversations'")
    return answers[0]


def load_references(path: str | Path, schema: Schema | None = None, task: str = "report") -> list[Reference]:
    """Read the reference records (`task == "report"`, id == eye_id) of an instruction JSONL file, in file order."""
    schema = schema or load_schema()
    path = Path(path)
    if not path.is_file():
        raise ReferenceError(f"{path}: reference dataset not found (run grok-generate, or set reference_path)")
    references: list[Reference] = []
    seen: set[str] = set()
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ReferenceError(f"{where}: not valid JSON ({error.msg})") from error
            if record.get("task", task) != task:
                continue
            record_id = str(record.get("eye_id") or record.get("id") or "")
            if not record_id:
                raise ReferenceError(f"{where}: report record without 'id'/'eye_id'")
            if record_id in seen:
                raise ReferenceError(f"{where}: duplicate reference id {record_id!r} (one report record per eye)")
            labels = tuple(record.get("labels") or (record.get("facts") or {}).get("diagnoses") or ())
            unknown = [label for label in labels if label not in schema.label_names]
            if unknown:
                raise ReferenceError(f"{where}: unknown label(s) {unknown}; expected {schema.label_names}")
            seen.add(record_id)
            references.append(
                Reference(
                    record_id, _reference_text(record, where), labels, record.get("facts") or {}, record.get("style")
                )
            )
    if not references:
        raise ReferenceError(f"{path}: no records with task == {task!r}")
    return references
