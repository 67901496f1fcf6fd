"""Biomarker and disease schema (YAML shipped in the package) and table validation."""

from grok.schema.schema import (
    Biomarker,
    Label,
    ReferenceRange,
    Schema,
    SchemaError,
    load_schema,
    parse_labels,
)

__all__ = ["Biomarker", "Label", "ReferenceRange", "Schema", "SchemaError", "load_schema", "parse_labels"]
