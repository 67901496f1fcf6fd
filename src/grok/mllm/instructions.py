"""Instruction files (contract 5): read a JSONL file of records, each checked, and an instruction set's manifest.

Every reader of instruction records (the MLLM's datamodule, `grok-infer`) goes through `read_instructions`: a bad
line stops it with `file:line`, the field and what was expected.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from grok.grounding.spans import SPANS_FIELD
from grok.mllm.model import MODALITIES
from grok.schema.schema import load_schema
from grok.utils.errors import InputError
from grok.utils.json_files import object_of_line, read_json_file


class InstructionFormatError(InputError):
    """An instruction record does not follow contract 5; the message names the file and line."""


TURN_ROLES = ("human", "user", "gpt", "assistant", "system")
ANSWER_ROLES = ("gpt", "assistant")


def read_instructions(path: str | Path, label_names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Records of an instruction JSONL file (one JSON object per line, blank lines skipped), each checked against
    contract 5 (`check_record`; labels against `label_names`, default the schema's). Any bad line, or a file without
    records, raises InstructionFormatError naming `file:line`."""
    path = Path(path)
    if path.is_dir():
        raise InstructionFormatError(f"{path}: is a folder; expected an instruction JSONL file")
    if not path.is_file():
        raise FileNotFoundError(f"instruction file {path} not found; run `make data` (grok-generate) first")
    labels = set(label_names) if label_names is not None else set(load_schema().label_names)
    records = []
    with path.open("rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            where = f"{path}:{line_number}"
            record = object_of_line(raw, where, InstructionFormatError)
            check_record(record, where, labels)
            record["_source"] = where
            records.append(record)
    if not records:
        raise InstructionFormatError(
            f"{path}: no records (an empty file; expected one JSON object per line, as grok-generate writes)"
        )
    return records


def check_record(record: Mapping[str, Any], where: str, label_names: set[str] | frozenset[str]) -> None:
    """Refuse a record that breaks contract 5: its `id`, `conversations`, `images`, `labels`, `facts` and spans."""
    if "id" in record and (not isinstance(record["id"], str) or not record["id"].strip()):
        raise InstructionFormatError(f"{where}: field 'id': {record['id']!r} (expected a non-empty string)")
    _check_conversations(record.get("conversations"), where)
    _check_images(record.get("images"), where)
    _check_labels(record.get("labels"), where, label_names)
    for key, kind in (("facts", dict), (SPANS_FIELD, list), ("task", str)):
        if record.get(key) is not None and not isinstance(record[key], kind):
            raise InstructionFormatError(
                f"{where}: field {key!r}: expected a {_kind_name(kind)}, got {type(record[key]).__name__}"
            )


def _kind_name(kind: type) -> str:
    return {dict: "JSON object", list: "JSON list", str: "string"}[kind]


def _check_conversations(turns: Any, where: str) -> None:
    """`conversations`: a non-empty list of {from, value} turns (or ChatML {role, content}); answers not empty."""
    if turns is None:
        raise InstructionFormatError(
            f"{where}: record has no 'conversations' (expected a list of {{from, value}} turns)"
        )
    if not isinstance(turns, list) or not turns:
        got = "an empty list" if isinstance(turns, list) else f"a {type(turns).__name__}"
        raise InstructionFormatError(
            f"{where}: field 'conversations': expected a non-empty list of {{from, value}} turns, got {got}"
        )
    for index, turn in enumerate(turns):
        field_name = f"conversations[{index}]"  # quoted in messages, as every field name
        if not isinstance(turn, dict):
            raise InstructionFormatError(
                f"{where}: field '{field_name}': expected a {{from, value}} object, got {type(turn).__name__}"
            )
        role, value = turn.get("from", turn.get("role")), turn.get("value", turn.get("content"))
        if role is None or value is None:
            absent = "'from'" if role is None else "'value'"
            raise InstructionFormatError(f"{where}: field '{field_name}': no {absent} (expected {{from, value}})")
        if role not in TURN_ROLES:
            raise InstructionFormatError(
                f"{where}: field '{field_name}.from': unknown role {role!r} (expected one of {list(TURN_ROLES)})"
            )
        if not isinstance(value, str):
            raise InstructionFormatError(
                f"{where}: field '{field_name}.value': expected a string, got {type(value).__name__}"
            )
        if role in ANSWER_ROLES and not value.strip():
            raise InstructionFormatError(f"{where}: field '{field_name}.value': empty answer ({role!r} turn)")


def _check_images(images: Any, where: str) -> None:
    """`images`: {modality: path or list of paths} with modalities of MODALITIES."""
    if images is None:
        return
    if not isinstance(images, dict):
        raise InstructionFormatError(
            f"{where}: field 'images': expected an object {{modality: path}}, got {type(images).__name__}"
        )
    for modality, value in images.items():
        if modality not in MODALITIES:
            raise InstructionFormatError(
                f"{where}: field 'images': unknown modality {modality!r} (expected keys among {list(MODALITIES)})"
            )
        paths = value if isinstance(value, list) else [value]
        if value is not None and not all(isinstance(item, str) and item.strip() for item in paths):
            raise InstructionFormatError(
                f"{where}: field 'images.{modality}': {value!r} (expected a relative path or a list of paths)"
            )


def _check_labels(labels: Any, where: str, label_names: set[str] | frozenset[str]) -> None:
    """`labels`: a list of the schema's label names."""
    if labels is None:
        return
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise InstructionFormatError(f"{where}: field 'labels': {labels!r} (expected a list of label names)")
    unknown = [label for label in labels if label not in label_names]
    if unknown:
        raise InstructionFormatError(
            f"{where}: field 'labels': unknown label(s) {unknown} (expected among {sorted(label_names)})"
        )


def role_of(turn: Mapping[str, Any]) -> Any:
    return turn.get("from", turn.get("role"))


def read_manifest(instructions_dir: str | Path) -> dict[str, Any]:
    """An instruction set's `manifest.json` (empty when there is none); malformed JSON names the file."""
    manifest = Path(instructions_dir) / "manifest.json"
    if not manifest.is_file():
        return {}
    content = read_json_file(manifest, InstructionFormatError, "grok-generate's manifest")
    if not isinstance(content, dict):
        raise InstructionFormatError(f"{manifest}: expected a JSON object, got {type(content).__name__}")
    return content
