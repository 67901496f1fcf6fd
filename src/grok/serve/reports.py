"""What the API returns beside a report's text: its findings and parsed diagnosis (read by the benchmark's own
parsers), and its grounding when the model gives one, each quoted quantity with its display name, unit, source and
status against the person's reference range."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from grok.bench.diagnosis import parse_diagnosis
from grok.bench.text import AnalysedText
from grok.bench.vocabulary import build_vocabulary
from grok.knowledge.base import KnowledgeBase
from grok.knowledge.engine import missing_value

# what each grounding source means to a reader of the report
SOURCE_NAMES = {
    "input": "measured (input)",
    "readout": "estimated from the image",
    "knowledge_base": "knowledge-base range",
}
RANGE_KINDS = ("low", "high", "threshold")


class ReportReader:
    """Findings, diagnosis and grounding of generated reports under one knowledge base."""

    def __init__(self, kb: KnowledgeBase) -> None:
        self.kb = kb
        self.schema = kb.schema
        self.vocabulary = build_vocabulary(kb.schema, kb)
        self.label_display = {label.name: label.display for label in kb.schema.labels}

    def read(self, text: str, grounding: Mapping[str, Any] | None, row: Mapping[str, Any] | None) -> dict[str, Any]:
        """`findings` (KB findings the report states, in order), `diagnosis` (labels, display names, where they were
        read) and `grounding` (None when the report has none)."""
        analysed = AnalysedText(text, self.vocabulary)
        stated = analysed.stated_findings()
        order = [m.key for m in analysed.finding_mentions if m.key in stated]
        findings = [{"id": key, "display": self.kb.findings[key].display} for key in dict.fromkeys(order)]
        parse = parse_diagnosis(analysed)
        diagnosis = {
            "labels": list(parse.labels),
            "display": [self.label_display.get(label, label) for label in parse.labels],
            "source": parse.source,
        }
        return {"findings": findings, "diagnosis": diagnosis, "grounding": self.grounding(text, grounding, row or {})}

    def grounding(
        self, text: str, grounding: Mapping[str, Any] | None, row: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """The grounding record with each quantity completed: `display`, `unit` (as the KB writes it),
        `source_name`, `status` (`normal`/`low`/`high` for a value, `reference` for a range bound, `unknown`), and
        `start`/`end` checked against the text (re-found by its `text`, or null when it is not there)."""
        if not grounding:
            return None
        age, sex = row.get("age_years"), row.get("sex")
        quantities = []
        for quantity in grounding.get("quantities") or []:
            item = dict(quantity)
            spec = self.schema.biomarkers.get(str(item.get("key")))
            item.setdefault("display", spec.label if spec is not None else item.get("key"))
            if spec is not None:
                item["unit"] = self.kb.unit_display.get(spec.unit or "", spec.unit or "")
            item["source_name"] = SOURCE_NAMES.get(item.get("source"), str(item.get("source")))
            item.setdefault("status", self._status(item, age, sex))
            item["start"], item["end"] = _located(text, item)
            quantities.append(item)
        return {**grounding, "quantities": quantities}

    def _status(self, item: Mapping[str, Any], age: Any, sex: Any) -> str:
        if item.get("kind") in RANGE_KINDS:
            return "reference"
        key, value = str(item.get("key")), item.get("value")
        if key not in self.schema.biomarkers or not isinstance(value, (int, float)):
            return "unknown"
        bounds = self.kb.reference_range(key, None if missing_value(age) else float(age), sex)
        if bounds is None:
            return "unknown"
        low, high = bounds
        return "low" if value < low else "high" if value > high else "normal"


def _located(text: str, item: Mapping[str, Any]) -> tuple[int | None, int | None]:
    start, end, shown = item.get("start"), item.get("end"), item.get("text")
    in_text = isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= len(text)
    if in_text and (not shown or text[start:end] == shown):
        return start, end
    if shown and shown in text:
        found = text.index(shown)
        return found, found + len(shown)
    return None, None
