"""Reference records of the benchmark: one `task == "report"` record per eye from the stage-one test JSONL."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grok.schema.schema import Schema, load_schema
from grok.utils.errors import InputError
from grok.utils.json_files import object_of_line


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
    turns = record.get("conversations")
    if not isinstance(turns, list) or not all(isinstance(turn, Mapping) for turn in turns):
        got = type(turns).__name__ if turns is not None else "nothing"
        raise ReferenceError(f"{where}: field 'conversations': expected a list of {{from, value}} turns, got {got}")
    answers = [turn.get("value") for turn in turns if turn.get("from") in ("gpt", "assistant")]
    if not answers or not isinstance(answers[0], str) or not answers[0].strip():
        raise ReferenceError(f"{where}: report record has no non-empty 'gpt' turn in 'conversations'")
    return answers[0]


def _labels(record: Mapping[str, Any], where: str, schema: Schema) -> tuple[str, ...]:
    """The record's labels (`labels`, else `facts.diagnoses`), every one a schema label name."""
    facts = record.get("facts")
    if facts is not None and not isinstance(facts, Mapping):
        raise ReferenceError(f"{where}: field 'facts': expected a JSON object, got {type(facts).__name__}")
    labels = record.get("labels") or (facts or {}).get("diagnoses") or []
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise ReferenceError(f"{where}: field 'labels': {labels!r} (expected a list of label names)")
    unknown = [label for label in labels if label not in schema.label_names]
    if unknown:
        raise ReferenceError(f"{where}: field 'labels': unknown label(s) {unknown}; expected {schema.label_names}")
    return tuple(labels)


def load_references(path: str | Path, schema: Schema | None = None, task: str = "report") -> list[Reference]:
    """Read the reference records (`task == "report"`, id == eye_id) of an instruction JSONL file, in file order."""
    schema = schema or load_schema()
    path = Path(path)
    if path.is_dir():
        raise ReferenceError(f"{path}: is a folder; expected the reference JSONL file (reference_path)")
    if not path.is_file():
        raise ReferenceError(f"{path}: reference dataset not found (run grok-generate, or set reference_path)")
    references: list[Reference] = []
    seen: dict[str, int] = {}
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            where = f"{path}:{number}"
            record = object_of_line(raw, where, ReferenceError)
            if record.get("task", task) != task:
                continue
            record_id = str(record.get("eye_id") or record.get("id") or "")
            if not record_id:
                raise ReferenceError(f"{where}: report record without 'id'/'eye_id'")
            if record_id in seen:
                raise ReferenceError(
                    f"{where}: duplicate reference id {record_id!r} (first at line {seen[record_id]}; one report "
                    "record per eye)"
                )
            labels = _labels(record, where, schema)
            seen[record_id] = number
            references.append(
                Reference(
                    record_id, _reference_text(record, where), labels, record.get("facts") or {}, record.get("style")
                )
            )
    if not references:
        raise ReferenceError(f"{path}: no records with task == {task!r}")
    return references
