"""A request's biomarker row, checked by the schema's own table validation; the schema's fields for the page."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from grok.knowledge.base import KnowledgeBase
from grok.schema.schema import Schema
from grok.schema.validate import validate_frame
from grok.serve.errors import RequestError


def validate_row(row: Any, schema: Schema, field: str = "biomarkers") -> dict[str, Any]:
    """The row (JSON object keyed by schema columns, `eye` required) with numbers as floats, or a 400 naming every
    column at fault with the schema's messages (`validate_frame`, as `grok-validate` reports a table). Columns left
    out are missing values (allowed where the schema allows them)."""
    if not isinstance(row, Mapping):
        raise RequestError(400, field, 'expected an object keyed by schema columns, e.g. {"eye": "R", ...}')
    refused = [c for c in row if c in (*schema.image_columns, schema.label_column, "subject_id", "visit")]
    if refused:
        raise RequestError(
            400,
            f"{field}.{refused[0]}",
            "not accepted in a request (images go in the image fields; labels and ids are not inputs)",
        )
    nested = [c for c, v in row.items() if isinstance(v, (Mapping, list))]
    if nested:
        raise RequestError(400, f"{field}.{nested[0]}", f"expected a number or a category, got {row[nested[0]]!r}")
    required = [name for name, spec in schema.identifiers.items() if not spec.get("nullable", True)]
    required += [name for name, spec in schema.biomarkers.items() if not spec.nullable]
    frame = pd.DataFrame([{**dict.fromkeys(required), "subject_id": "request", **row}])
    report = validate_frame(frame, file=field, schema=schema)
    # only the given columns (and the required ones) are checked: an absent nullable column is a missing value here
    problems = [p for p in report.problems if p.kind != "missing_column" or p.column in frame.columns]
    if problems:
        first, *others = problems
        message = "; ".join([first.message, *(f"{field}.{p.column}: {p.message}" for p in others)])
        raise RequestError(400, f"{field}.{first.column}" if first.column else field, message)
    clean: dict[str, Any] = {}
    for name, value in row.items():
        spec = schema.biomarkers.get(name)
        clean[name] = float(value) if spec is not None and spec.dtype != "category" and value is not None else value
    return clean


def schema_fields(kb: KnowledgeBase, modalities: Sequence[str]) -> list[dict[str, Any]]:
    """The inputs the page shows: the eye, then the biomarkers of `modalities`, with units (as the knowledge base
    writes them), valid and reference ranges, and categories."""
    schema = kb.schema
    fields: list[dict[str, Any]] = [
        {
            "name": "eye",
            "display": "eye",
            "dtype": "category",
            "categories": list(schema.identifiers.get("eye", {}).get("categories", ["R", "L"])),
            "required": True,
            "modality": "identifier",
        }
    ]
    for biomarker in schema.biomarkers.values():
        if biomarker.modality not in modalities:
            continue
        reference = kb.reference(biomarker.name)
        fields.append(
            {
                "name": biomarker.name,
                "display": biomarker.label,
                "unit": kb.unit_display.get(biomarker.unit or "", biomarker.unit or ""),
                "modality": biomarker.modality,
                "dtype": biomarker.dtype,
                "categories": list(biomarker.categories),
                "valid_range": list(biomarker.valid_range) if biomarker.valid_range else None,
                "reference": [reference.low, reference.high] if reference else None,
                "required": not biomarker.nullable,
            }
        )
    return fields
