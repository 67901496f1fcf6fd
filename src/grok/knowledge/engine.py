"""The rule engine (pure, deterministic): one row -> quantities vs reference ranges -> findings -> diagnoses.

`condition_excess`, `finding_from_values` and `diagnose` are the reference semantics of the knowledge base's rules;
`evaluate_row` is the fast path stage one runs per eye (same results, checked by a property test).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any, NamedTuple

from grok.knowledge.base import SYSTEMIC_COLUMNS, Condition, DiagnosisRule, FindingRule, KnowledgeBase
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


def missing_value(value: Any) -> bool:
    """Whether a table cell holds no measurement (None, NaN, pandas NA)."""
    if value is None:
        return True
    try:
        return bool(value != value)
    except TypeError:  # pandas.NA refuses bool()
        return True


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


@lru_cache(maxsize=16)
def _unassessed_in_rules(kb: KnowledgeBase) -> tuple[tuple[str, ReferenceRange | None], ...]:
    """(name, reference) of the biomarkers finding rules compare that are not assessed quantities (e.g. age)."""
    assessed = {name for name, *_ in _assessed(kb)}
    names = dict.fromkeys(c.biomarker for rule in kb.findings.values() for c in rule.conditions)
    return tuple((name, kb.reference(name)) for name in names if name not in assessed)


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
    for name, reference in _unassessed_in_rules(kb):
        value = _number(get(name))
        if value is not None:
            values[name] = value
            if reference is not None:
                ranges[name] = reference.for_person(age, sex)
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
        kept = drop_superseded(kb, fired)
        if len(kept) != len(fired):
            findings = [f for f in findings if f.id in kept]
    systemic = {name: values.get(name) for name in SYSTEMIC_COLUMNS}
    systemic["age_years"], systemic["sex"] = age, sex
    present = frozenset(f.id for f in findings)
    diagnoses = tuple(Diagnosis(label, support) for label, support in diagnose_present(kb, present, systemic))
    return Assessment(tuple(quantities), tuple(findings), diagnoses, systemic)


# ------------------------------------------------------------------------------------------------------- diagnoses
def supporting_findings(rule: DiagnosisRule, present: set[str] | frozenset[str]) -> tuple[str, ...] | None:
    """The supporting findings when `rule` is met by `present`, else None (its systemic conditions not checked)."""
    if any(f not in present for f in rule.all_of):
        return None
    if rule.any_of and not any(f in present for f in rule.any_of):
        return None
    if any(f in present for f in rule.none_of):
        return None
    return tuple(f for f in rule.related_findings if f in present)


def systemic_findings(kb: KnowledgeBase, systemic: Mapping[str, Any] | None) -> set[str]:
    """Systemic findings (e.g. raised HbA1c) that follow from the given systemic values alone."""
    if not systemic:
        return set()
    age, sex = systemic.get("age_years"), systemic.get("sex")
    return {
        rule.id
        for rule in kb.findings.values()
        if rule.kind == "systemic" and finding_from_values(rule, systemic, kb, age, sex) is not None
    }


@lru_cache(maxsize=16)
def _supersessions(kb: KnowledgeBase) -> tuple[tuple[str, frozenset[str]], ...]:
    """(finding id, the ids that supersede it) for every finding that another can supersede."""
    return tuple((f.id, frozenset(f.superseded_by)) for f in kb.findings.values() if f.superseded_by)


def drop_superseded(kb: KnowledgeBase, finding_ids: set[str]) -> set[str]:
    """The findings without those a more specific present finding supersedes (e.g. enlarged VCDR by cupping)."""
    dropped = {f for f, by in _supersessions(kb) if f in finding_ids and not by.isdisjoint(finding_ids)}
    return set(finding_ids) - dropped


def _systemic_conditions_hold(kb: KnowledgeBase, conditions: tuple[Condition, ...], systemic: Mapping) -> bool:
    age, sex = systemic.get("age_years"), systemic.get("sex")
    return all(condition_excess(c, systemic.get(c.biomarker), kb, age, sex) is not None for c in conditions)


def diagnose_present(
    kb: KnowledgeBase, present: frozenset[str] | set[str], systemic: Mapping[str, Any] | None = None
) -> list[tuple[str, tuple[str, ...]]]:
    """Like `diagnose`, for a set of findings that already includes the systemic ones and none superseded."""
    met: dict[str, tuple[str, ...]] = {}
    for rule in kb.diagnoses:
        supporting = supporting_findings(rule, present)
        if supporting is None:
            continue
        if rule.systemic and not _systemic_conditions_hold(kb, rule.systemic, systemic or {}):
            continue
        met[rule.label] = tuple(dict.fromkeys((*met.get(rule.label, ()), *supporting)))
    superseded = {
        rule.label for rule in kb.diagnoses if rule.label in met and any(o in met for o in rule.superseded_by)
    }
    for label in superseded:
        del met[label]
    if not met:
        return [(kb.schema.normal_label, ())]
    return [(label, met[label]) for label in kb.schema.label_names if label in met]


def diagnose(
    kb: KnowledgeBase, finding_ids: Iterable[str], systemic: Mapping[str, Any] | None = None
) -> list[tuple[str, tuple[str, ...]]]:
    """(label, supporting findings) for every label whose rule is met; the normal label when none is."""
    present = drop_superseded(kb, set(finding_ids) | systemic_findings(kb, systemic))
    return diagnose_present(kb, frozenset(present), systemic)


def diagnoses_from_findings(
    kb: KnowledgeBase, finding_ids: Iterable[str], systemic: Mapping[str, Any] | None = None
) -> list[str]:
    """Labels (schema order) that the KB derives from these findings plus any systemic values given."""
    return [label for label, _ in diagnose(kb, finding_ids, systemic)]
