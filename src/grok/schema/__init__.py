"""Biomarker and disease schema (YAML shipped in the package) and the validation of a table against it."""

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
