"""The rule engine (pure, deterministic): one row -> quantities vs reference ranges -> findings -> diagnoses."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any, NamedTuple

from grok.knowledge.base import SYSTEMIC_COLUMNS, Condition, FindingRule, KnowledgeBase, missing_value
from grok.schema.schema import ReferenceRange

ASSESSED_MODALITIES = ("oct", "cfp", "lesion", "systemic")
_new_quantity = tuple.__new__  # NamedTuple construction without its Python-level __new__ (hot loop)
STATUSES = ("low", "normal", "high", "unavailable")


class Quantity(NamedTuple):
    """One measured quantity compared with the person's reference range."""

    name: str
    value: float | None
    unit: str | None
    low: float | None
    high: float | None
    status: str  # low | normal | high | unavailable


class Finding(NamedTuple):
    """A qualitative finding with its severity and the biomarkers whose values triggered it."""

    id: str
    severity: str
    biomarkers: tuple[str, ...]


class Diagnosis(NamedTuple):
    """A diagnosed label and the findings that support it (empty for the normal label)."""

    label: str
    findings: tuple[str, ...]


@dataclass
class Assessment:
    """Everything the engine concludes about one eye."""

    quantities: tuple[Quantity, ...]
    findings: tuple[Finding, ...]
    diagnoses: tuple[Diagnosis, ...]
    systemic: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def by_name(self) -> dict[str, Quantity]:
        """Quantities keyed by biomarker name."""
        return {q.name: q for q in self.quantities}

    @property
    def finding_ids(self) -> list[str]:
        """Ids of the findings, in knowledge-base order."""
        return [f.id for f in self.findings]

    @property
    def labels(self) -> list[str]:
        """Diagnosed labels, in schema order."""
        return [d.label for d in self.diagnoses]


def _number(value: Any) -> float | None:
    if missing_value(value):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _sex(value: Any) -> str | None:
    return None if missing_value(value) else str(value)


def condition_excess(
    condition: Condition,
    value: Any,
    kb: KnowledgeBase,
    age: Any = None,
    sex: Any = None,
    bounds: tuple[float, float] | None = None,
) -> float | None:
    """How far `value` lies past the condition's threshold (>= 0) when it fires; None when it does not or is missing."""
    number = _number(value)
    if number is None:
        return None
    threshold = condition.threshold
    if threshold is None:
        bounds = bounds or kb.reference_range(condition.biomarker, _number(age), _sex(sex))
        threshold = bounds[1] if condition.upward else bounds[0]
    operator = condition.operator
    if operator == "above":
        return number - threshold if number > threshold else None
    if operator == "at_least":
        return number - threshold if number >= threshold else None
    if operator == "below":
        return threshold - number if number < threshold else None
    return threshold - number if number <= threshold else None


def severity_of(condition: Condition, excess: float, levels: tuple[str, ...]) -> str:
    """The severity grade reached by a value `excess` past the threshold."""
    severity = levels[0]
    for grade, distance in condition.grades:
        if excess >= distance:
            severity = grade
    return severity


def finding_from_values(
    rule: FindingRule,
    values: Mapping[str, Any],
    kb: KnowledgeBase,
    age: Any = None,
    sex: Any = None,
    ranges: Mapping[str, tuple[float, float]] | None = None,
) -> Finding | None:
    """The finding `rule` produces from these values, or None (missing values never trigger a finding)."""
    triggered: list[str] = []
    rank = 0
    levels = kb.severity_levels
    for condition in rule.conditions:
        bounds = ranges.get(condition.biomarker) if ranges is not None else None
        excess = condition_excess(condition, values.get(condition.biomarker), kb, age, sex, bounds)
        if excess is None:
            if rule.require_all:
                return None
            continue
        triggered.append(condition.biomarker)
        rank = max(rank, levels.index(severity_of(condition, excess, levels)))
    if not triggered:
        return None
    return Finding(rule.id, levels[rank], tuple(dict.fromkeys(triggered)))


@lru_cache(maxsize=16)
def _compiled_rules(
    kb: KnowledgeBase,
) -> tuple[tuple[str, bool, tuple[tuple[str, str, float | None, bool, tuple], ...]], ...]:
    """The finding rules as plain tuples (the engine's hot loop; same semantics as `finding_from_values`)."""
    levels = kb.severity_levels
    return tuple(
        (
            rule.id,
            rule.require_all,
            tuple(
                (c.biomarker, c.operator, c.threshold, c.upward, tuple((levels.index(g), d) for g, d in c.grades))
                for c in rule.conditions
            ),
        )
        for rule in kb.findings.values()
    )


@lru_cache(maxsize=16)
def _assessed(
    kb: KnowledgeBase,
) -> tuple[tuple[str, str | None, tuple[float, float] | None, ReferenceRange | None], ...]:
    """(name, unit, fixed bounds, stratified reference) of every biomarker the engine compares, in schema order.

    Ranges without strata are resolved once here; only stratified ones are resolved per person.
    """
    assessed = []
    for b in kb.schema.biomarkers.values():
        if b.modality not in ASSESSED_MODALITIES:
            continue
        reference = kb.reference(b.name)
        fixed = (reference.low, reference.high) if reference is not None and not reference.strata else None
        assessed.append((b.name, b.unit, fixed, reference if reference is not None and reference.strata else None))
    return tuple(assessed)


def evaluate_row(row: Mapping[str, Any], kb: KnowledgeBase) -> Assessment:
    """Assess one eye: quantities with status, findings with their triggering biomarkers, diagnoses with support.

    Missing values are reported as `unavailable`, never imputed, and never trigger a finding. Columns that a table
    lacks (e.g. optional lesion counts) are treated as missing.
    """
    age, sex = _number(row.get("age_years")), _sex(row.get("sex"))
    values: dict[str, float] = {}
    ranges: dict[str, tuple[float, float]] = {}
    quantities = []
    get = row.get
    for name, unit, fixed, stratified in _assessed(kb):
        bounds = fixed if stratified is None else stratified.for_person(age, sex)
        value = get(name)
        if type(value) is float:
            if value != value:  # NaN
                value = None
        elif value is not None:
            value = _number(value)  # ints, numpy scalars, pandas.NA, strings
        if bounds is None:
            low = high = None
            status = "unavailable" if value is None else "normal"
        else:
            low, high = bounds
            ranges[name] = bounds
            status = "unavailable" if value is None else "low" if value < low else "high" if value > high else "normal"
        if value is not None:
            values[name] = value
        quantities.append(_new_quantity(Quantity, (name, value, unit, low, high, status)))
    findings = []
    levels = kb.severity_levels
    for rule_id, require_all, conditions in _compiled_rules(kb):
        triggered: list[str] = []
        rank = 0
        for name, operator, threshold, upward, grades in conditions:
            value = values.get(name)
            excess = None
            if value is not None:
                if threshold is None:
                    threshold = ranges[name][1] if upward else ranges[name][0]
                if operator == "above":
                    excess = value - threshold if value > threshold else None
                elif operator == "at_least":
                    excess = value - threshold if value >= threshold else None
                elif operator == "below":
                    excess = threshold - value if value < threshold else None
                else:
                    excess = threshold - value if value <= threshold else None
            if excess is None:
                if require_all:
                    triggered = []
                    break
                continue
            if name not in triggered:
                triggered.append(name)
            for grade_rank, distance in grades:
                if excess >= distance and grade_rank > rank:
                    rank = grade_rank
        if triggered:
            findings.append(Finding(rule_id, levels[rank], tuple(triggered)))
    if findings:
        fired = {f.id for f in findings}
        kept = kb.drop_superseded(fired)
        if len(kept) != len(fired):
            findings = [f for f in findings if f.id in kept]
    systemic = {name: values.get(name) for name in SYSTEMIC_COLUMNS}
    systemic["age_years"], systemic["sex"] = age, sex
    present = frozenset(f.id for f in findings)
    diagnoses = tuple(Diagnosis(label, support) for label, support in kb.diagnose_present(present, systemic))
    return Assessment(tuple(quantities), tuple(findings), diagnoses, systemic)
