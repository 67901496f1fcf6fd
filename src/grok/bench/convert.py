"""External reports into the benchmark's files: a reference file (`grok-eval reference_path=`) and predictions.

Two inputs: the GROK paper's released LLaVA-style JSON (a list, or JSON lines, of records with `id`, `image`,
`octs` (OCT slices), `label` and `conversations`, the report being the first `gpt` turn) and a plain CSV of
(id, report, label). Labels are matched to the schema's names, display names and synonyms ("DiabeticRetinopathy",
"diabetic retinopathy", "DR"); several labels are separated by `;`, `,` or `|`. Every problem is reported with the
file, the record (line or row) and the field; output files are written whole or not at all.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grok.schema.schema import Schema
from grok.utils.errors import InputError

FORMATS = ("auto", "paper", "csv")
DEFAULT_PROMPT = "<oct>\n<cfp>\nWrite the diagnostic report."


class ConversionError(InputError):
    """An input that cannot be converted; the message names the file, the record and the field."""


@dataclass(frozen=True)
class ExternalReport:
    """One eye's report from an external source, with its labels (empty when the source gives none)."""

    id: str
    report: str
    labels: tuple[str, ...]
    images: Mapping[str, Any] = field(default_factory=dict)
    prompt: str | None = None
    where: str = field(default="", compare=False)  # file and line/record/row it came from (for error messages)


def _key(text: str) -> str:
    return re.sub(r"[\s_\-']+", "", text.lower())


def label_index(schema: Schema) -> dict[str, str]:
    """Normalised label spelling (name, display name, synonyms) -> schema label name."""
    index: dict[str, str] = {}
    for label in schema.labels:
        for spelling in (label.name, label.display, *label.synonyms):
            index.setdefault(_key(spelling), label.name)
    return index


def parse_label_cell(value: Any, index: Mapping[str, str], where: str) -> tuple[str, ...]:
    """Schema label names from a label cell: a string (`;`, `,` or `|` separated) or a list of strings."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return ()
    items = value if isinstance(value, list) else re.split(r"[;,|]", str(value))
    labels = []
    for item in items:
        if not str(item).strip():
            continue
        name = index.get(_key(str(item)))
        if name is None:
            known = sorted(set(index.values()))
            raise ConversionError(
                f"{where}: field 'label': unknown label {str(item).strip()!r}; expected one of {known}"
            )
        if name not in labels:
            labels.append(name)
    return tuple(labels)


def _report_turn(record: Mapping[str, Any], where: str) -> tuple[str, str | None]:
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise ConversionError(f"{where}: field 'conversations': expected a non-empty list of {{from, value}} turns")
    answers = [t.get("value") for t in turns if isinstance(t, Mapping) and t.get("from") in ("gpt", "assistant")]
    if not answers or not isinstance(answers[0], str) or not answers[0].strip():
        raise ConversionError(f"{where}: field 'conversations': no non-empty 'gpt' turn (the report)")
    prompts = [t.get("value") for t in turns if isinstance(t, Mapping) and t.get("from") in ("human", "user")]
    return answers[0].strip(), prompts[0] if prompts and isinstance(prompts[0], str) else None


def _read_text(path: Path, encoding: str = "utf-8") -> str:
    """The whole file as text; a binary (non-UTF-8) file is refused naming its line."""
    data = path.read_bytes()
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise ConversionError(
            f"{path}:{line}: not UTF-8 text (byte {error.start}); expected the paper's JSON or a CSV"
        ) from None


def _paper_records(path: Path) -> list[tuple[str, Any]]:
    text = _read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None
    if isinstance(data, list):
        return [(f"{path}: record {i}", record) for i, record in enumerate(data)]
    if isinstance(data, Mapping):
        return [(f"{path}: record 0", data)]
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append((f"{path}:{number}", json.loads(line)))
        except json.JSONDecodeError as error:
            raise ConversionError(f"{path}:{number}: not valid JSON ({error.msg}, column {error.colno})") from error
    return records


def read_paper_json(path: str | Path, schema: Schema) -> list[ExternalReport]:
    """The reports of the paper's released JSON (a JSON list or JSON lines)."""
    path = Path(path)
    index = label_index(schema)
    reports = []
    for where, record in _paper_records(path):
        if not isinstance(record, Mapping):
            raise ConversionError(f"{where}: expected a JSON object, got {type(record).__name__}")
        record_id = record.get("id")
        if record_id is None or not str(record_id).strip():
            raise ConversionError(f"{where}: field 'id': missing or empty")
        report, prompt = _report_turn(record, where)
        images = {k: v for k, v in (("cfp", record.get("image")), ("oct", record.get("octs"))) if v}
        labels = parse_label_cell(record.get("label", record.get("labels")), index, where)
        reports.append(ExternalReport(str(record_id).strip(), report, labels, images, prompt, where))
    return reports


def read_csv_reports(path: str | Path, schema: Schema, columns: Mapping[str, str]) -> list[ExternalReport]:
    """The reports of a CSV with an id, a report and (optionally) a label column (`columns` maps role -> name)."""
    path = Path(path)
    index = label_index(schema)
    reader = csv.DictReader(io.StringIO(_read_text(path, "utf-8-sig"), newline=""))
    try:
        return _csv_reports(reader, path, index, columns)
    except csv.Error as error:
        raise ConversionError(f"{path}: line {reader.line_num}: not a readable CSV ({error})") from error


def _csv_reports(
    reader: csv.DictReader, path: Path, index: Mapping[str, str], columns: Mapping[str, str]
) -> list[ExternalReport]:
    """The reports of the rows of `reader` (a CSV of `path`)."""
    header = reader.fieldnames or []
    missing = [columns[role] for role in ("id", "report") if columns[role] not in header]
    if missing:
        raise ConversionError(f"{path}: missing column(s) {missing}; found {header} (set csv_columns.<role>=...)")
    reports = []
    for number, row in enumerate(reader, start=2):  # line 1 is the header
        where = f"{path}: row {number}"
        record_id, report = (row.get(columns["id"]) or "").strip(), (row.get(columns["report"]) or "").strip()
        if not record_id:
            raise ConversionError(f"{where}: field {columns['id']!r}: missing or empty")
        if not report:
            raise ConversionError(f"{where}: field {columns['report']!r}: empty report for id {record_id!r}")
        labels = parse_label_cell(row.get(columns["label"]), index, where) if columns["label"] in header else ()
        reports.append(ExternalReport(record_id, report, labels, where=where))
    return reports


def read_external(path: str | Path, fmt: str, schema: Schema, columns: Mapping[str, str]) -> list[ExternalReport]:
    """Read `path` in `fmt` (auto: .csv is a CSV, .json/.jsonl the paper's JSON); ids must be unique."""
    path = Path(path)
    if fmt not in FORMATS:
        raise ConversionError(f"format: expected one of {list(FORMATS)}, got {fmt!r}")
    if path.is_dir():
        raise ConversionError(f"{path}: is a folder; expected the paper's JSON or a CSV file")
    if not path.is_file():
        raise ConversionError(f"{path}: input file not found")
    if fmt == "auto":
        fmt = "csv" if path.suffix.lower() in (".csv", ".tsv") else "paper"
    reports = read_csv_reports(path, schema, columns) if fmt == "csv" else read_paper_json(path, schema)
    if not reports:
        raise ConversionError(f"{path}: no reports")
    seen: dict[str, str] = {}
    for report in reports:
        if report.id in seen:
            raise ConversionError(
                f"{report.where or path}: duplicate id {report.id!r} (first at {seen[report.id]}; one report per eye)"
            )
        seen[report.id] = report.where or str(path)
    return reports


def reference_records(reports: Sequence[ExternalReport], source: str) -> list[dict[str, Any]]:
    """Stage-one style report records (no `facts`: grok-eval computes them from `reference_table`, or skips task 3)."""
    unlabelled = [r.id for r in reports if not r.labels]
    if unlabelled:
        raise ConversionError(
            f"{source}: {len(unlabelled)} report(s) without a label, e.g. {unlabelled[:5]}; references need labels"
        )
    return [
        {
            "id": r.id,
            "eye_id": r.id,
            "task": "report",
            "style": "narrative",
            "labels": list(r.labels),
            "images": dict(r.images),
            "conversations": [
                {"from": "human", "value": r.prompt or DEFAULT_PROMPT},
                {"from": "gpt", "value": r.report},
            ],
        }
        for r in reports
    ]


def prediction_records(reports: Sequence[ExternalReport], model: str) -> list[dict[str, Any]]:
    """Predictions records (`{"id", "prediction", "model"}`) for grok-eval."""
    return [{"id": r.id, "prediction": r.report, "model": model} for r in reports]


def write_jsonl(records: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Write JSON lines atomically (a temporary file renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path
