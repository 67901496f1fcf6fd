"""Task 3: fine-grained clinical quality of a report's chain of thought, scored deterministically against `facts`."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from grok.bench.diagnosis import DiagnosisParse, parse_diagnosis
from grok.bench.references import Reference
from grok.bench.text import AnalysedText, QuotedValue, Vocabulary
from grok.bench.vocabulary import findings_by_direction
from grok.knowledge.base import KnowledgeBase
from grok.knowledge.engine import diagnoses_from_findings, evaluate_row
from grok.schema.units import convert

QUOTE_STATUSES = ("correct", "near", "off", "unit_mismatch", "contradicts", "hallucinated")


@dataclass(frozen=True)
class QuoteCheck:
    """One quoted biomarker value compared with the measurement."""

    biomarker: str
    quoted: float
    unit: str | None
    measured: float | None
    relative_error: float | None
    status: str  # one of QUOTE_STATUSES


@dataclass
class ClinicalScore:
    """Task-3 scores of one report, with everything needed to see where it went wrong."""

    id: str
    quotes: list[QuoteCheck] = field(default_factory=list)
    quantitative_accuracy: float = 0.0
    hallucinated: int = 0
    stated_findings: list[str] = field(default_factory=list)
    true_findings: list[str] = field(default_factory=list)
    finding_precision: float = 0.0
    finding_recall: float = 0.0
    finding_f1: float = 0.0
    predicted_labels: list[str] = field(default_factory=list)
    diagnosis_source: str = "unparsed"
    own_findings: list[str] = field(default_factory=list)
    derived_labels: list[str] = field(default_factory=list)
    unsupported_labels: list[str] = field(default_factory=list)
    consistent: bool = False
    correct: bool = False
    score: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (kept per report in the benchmark output)."""
        return {**vars(self), "quotes": [dict(vars(q)) for q in self.quotes]}


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def measured_values(facts: Mapping[str, Any]) -> dict[str, float]:
    """Every measured number in `facts`: the biomarkers plus the systemic values."""
    values = {k: v for k, v in ((k, _number(v)) for k, v in (facts.get("systemic") or {}).items()) if v is not None}
    values.update(
        {k: v for k, v in ((k, _number(v)) for k, v in (facts.get("biomarkers") or {}).items()) if v is not None}
    )
    return values


def _status(value: float, low: float | None, high: float | None) -> str:
    if low is not None and value < low:
        return "low"
    if high is not None and value > high:
        return "high"
    return "normal"


def check_quote(
    quote: QuotedValue,
    measured: Mapping[str, float],
    ranges: Mapping[str, tuple],
    declared_units: Mapping[str, str | None],
    tolerance: float,
) -> QuoteCheck:
    """Compare one quoted value with the measurement, in the biomarker's declared unit.

    correct: within `tolerance` (relative); near: within twice it; off: further; unit_mismatch: the number matches but
    the stated unit is wrong (e.g. '22 mm' for 22 um); contradicts: off and on the other side of the reference range
    than the measurement (e.g. 'thin' where it is thick); hallucinated: the biomarker was never measured.
    """
    truth = measured.get(quote.biomarker)
    if truth is None:
        return QuoteCheck(quote.biomarker, quote.value, quote.unit, None, None, "hallucinated")
    declared = declared_units.get(quote.biomarker)
    value = quote.value
    unit_mismatch = False
    if quote.unit is not None and declared not in (None, "1", "count") and quote.unit != declared:
        converted = convert(quote.value, quote.unit, declared)
        if converted is None:
            unit_mismatch = True
        else:
            value = converted
    error = abs(value - truth) / max(abs(truth), 1e-9)
    raw_error = abs(quote.value - truth) / max(abs(truth), 1e-9)
    if (unit_mismatch or quote.unit != declared) and error > tolerance and raw_error <= tolerance and quote.unit:
        return QuoteCheck(quote.biomarker, quote.value, quote.unit, truth, raw_error, "unit_mismatch")
    if error <= tolerance:
        status = "correct"
    elif error <= 2 * tolerance:
        status = "near"
    else:
        low, high = ranges.get(quote.biomarker, (None, None))
        status = "contradicts" if _status(value, low, high) != _status(truth, low, high) else "off"
    return QuoteCheck(quote.biomarker, quote.value, quote.unit, truth, error, status)


def _prf(stated: set[str], truth: set[str]) -> tuple[float, float, float]:
    if not stated and not truth:
        return 1.0, 1.0, 1.0
    hits = len(stated & truth)
    precision = hits / len(stated) if stated else 0.0
    recall = hits / len(truth) if truth else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


class ClinicalScorer:
    """Scores reports against facts under one knowledge base."""

    def __init__(self, vocabulary: Vocabulary, kb: KnowledgeBase, tolerance: float = 0.10):
        self.vocabulary = vocabulary
        self.kb = kb
        self.tolerance = tolerance
        self.directions = findings_by_direction(kb)

    def from_quoted_values(self, quotes: list[QuoteCheck], systemic: Mapping[str, Any]) -> set[str]:
        """Findings the KB derives from the values the report quotes (systemic values complete the row)."""
        quoted = {q.biomarker: q.quoted for q in quotes if q.status != "unit_mismatch"}
        return set(evaluate_row({**systemic, **quoted}, self.kb).finding_ids) if quoted else set()

    def stated_findings(self, analysed: AnalysedText, from_values: set[str], quoted: set[str]) -> set[str]:
        """Findings the report asserts: KB phrases outside negation, plus directional statements about biomarkers
        ("the RNFL seems low"). A statement about a biomarker whose value the report quotes asserts the findings
        the KB derives from that value in that direction; otherwise every KB finding of that direction."""
        stated = analysed.stated_findings()
        for biomarker, direction in analysed.direction_statements:
            candidates = self.directions.get((biomarker, direction), ())
            if biomarker in quoted:
                candidates = [f for f in candidates if f in from_values]
            stated.update(candidates)
        return stated

    def score(self, reference: Reference, analysed: AnalysedText, parse: DiagnosisParse | None = None) -> ClinicalScore:
        """Quantitative accuracy, finding precision/recall/F1, conclusion consistency and correctness of one report."""
        facts = reference.facts
        result = ClinicalScore(reference.id)
        if not analysed.text.strip():
            return result
        measured = measured_values(facts)
        ranges = {q["name"]: (q.get("low"), q.get("high")) for q in facts.get("quantities") or []}
        result.quotes = [
            check_quote(q, measured, ranges, self.vocabulary.biomarker_units, self.tolerance)
            for q in analysed.quoted_values
        ]
        if result.quotes:
            result.quantitative_accuracy = sum(q.status == "correct" for q in result.quotes) / len(result.quotes)
        result.hallucinated = sum(q.status == "hallucinated" for q in result.quotes)
        systemic = dict(facts.get("systemic") or {})
        from_values = self.from_quoted_values(result.quotes, systemic)
        stated = self.stated_findings(analysed, from_values, {q.biomarker for q in result.quotes})
        truth = set(facts.get("findings") or [])
        result.stated_findings, result.true_findings = sorted(stated), sorted(truth)
        result.finding_precision, result.finding_recall, result.finding_f1 = _prf(stated, truth)
        parse = parse or parse_diagnosis(analysed)
        result.predicted_labels, result.diagnosis_source = list(parse.labels), parse.source
        own = stated | from_values  # what the report commits to: stated findings and those its own numbers imply
        result.own_findings = sorted(own)
        result.derived_labels = diagnoses_from_findings(self.kb, own, systemic)
        result.unsupported_labels = [label for label in parse.labels if label not in result.derived_labels]
        result.consistent = parse.parsed and set(parse.labels) == set(result.derived_labels)
        result.correct = parse.parsed and set(parse.labels) == set(reference.labels)
        result.score = (result.quantitative_accuracy + result.finding_f1 + result.consistent + result.correct) / 4
        return result
