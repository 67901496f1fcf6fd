"""The knowledge base: versioned YAML of findings and diagnosis rules, loaded and validated against the schema."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from itertools import pairwise
from pathlib import Path
from typing import Any

import yaml

from grok.schema.schema import ReferenceRange, ReferenceStratum, Schema, load_schema

OPERATORS = ("above", "below", "at_least", "at_most")
REFERENCE = "reference"
FINDING_KINDS = ("retinal", "systemic")
SYSTEMIC_COLUMNS = ("age_years", "sex", "sbp_mmhg", "dbp_mmhg", "hba1c_mmol_mol", "bmi_kg_m2")
_SNAKE_CASE = re.compile(r"^[a-z][a-z0-9_]*$")
_TOP_KEYS = {
    "version",
    "name",
    "description",
    "severity_levels",
    "reference_overrides",
    "core_biomarkers",
    "max_extra_abnormal",
    "decimals",
    "unit_display",
    "findings",
    "diagnoses",
}
_FINDING_KEYS = {"id", "display", "phrases", "kind", "any", "all", "superseded_by", "source"}
_CONDITION_KEYS = {"biomarker", "grades", *OPERATORS}
_DIAGNOSIS_KEYS = {"label", "all_of", "any_of", "none_of", "also_supported_by", "systemic", "superseded_by", "source"}


class KnowledgeBaseError(ValueError):
    """The knowledge base file is invalid; the message names the file and the key at fault."""


def missing_value(value: Any) -> bool:
    """Whether a table cell holds no measurement (None, NaN, pandas NA)."""
    if value is None:
        return True
    try:
        return bool(value != value)
    except TypeError:  # pandas.NA refuses bool()
        return True


@dataclass(frozen=True)
class Condition:
    """One comparison of a biomarker with a number or with the person's reference range."""

    biomarker: str
    operator: str
    threshold: float | None  # None: the reference range's bound (high for above/at_least, low for below/at_most)
    grades: tuple[tuple[str, float], ...] = ()  # (severity, distance past the threshold), ascending

    @property
    def uses_reference(self) -> bool:
        """Whether the threshold is a bound of the reference range."""
        return self.threshold is None

    @property
    def upward(self) -> bool:
        """Whether the condition fires on high values."""
        return self.operator in ("above", "at_least")


@dataclass(frozen=True)
class FindingRule:
    """A qualitative finding and the conditions that trigger it."""

    id: str
    display: str
    phrases: tuple[str, ...]
    kind: str
    conditions: tuple[Condition, ...]
    require_all: bool
    source: str
    superseded_by: tuple[str, ...] = ()  # not reported when one of these (more specific) findings is present

    @property
    def biomarkers(self) -> tuple[str, ...]:
        """Biomarkers this finding looks at, in rule order."""
        return tuple(dict.fromkeys(c.biomarker for c in self.conditions))


@dataclass(frozen=True)
class DiagnosisRule:
    """How findings (and systemic values) lead to one schema label."""

    label: str
    all_of: tuple[str, ...]
    any_of: tuple[str, ...]
    none_of: tuple[str, ...]
    also_supported_by: tuple[str, ...]
    systemic: tuple[Condition, ...]
    superseded_by: tuple[str, ...]
    source: str

    @property
    def related_findings(self) -> tuple[str, ...]:
        """Every finding that can support this label."""
        return tuple(dict.fromkeys((*self.all_of, *self.any_of, *self.also_supported_by)))

    def supporting(self, present: set[str] | frozenset[str]) -> tuple[str, ...] | None:
        """The supporting findings when the rule is met by `present`, else None (systemic checked by the caller)."""
        if any(f not in present for f in self.all_of):
            return None
        if self.any_of and not any(f in present for f in self.any_of):
            return None
        if any(f in present for f in self.none_of):
            return None
        return tuple(f for f in self.related_findings if f in present)


@dataclass(frozen=True, eq=False)  # identity hash: engines cache compiled views per KB object
class KnowledgeBase:
    """A validated knowledge base bound to the schema it was checked against."""

    version: int
    name: str
    path: str
    schema: Schema
    findings: dict[str, FindingRule]
    diagnoses: tuple[DiagnosisRule, ...]
    core_biomarkers: tuple[str, ...]
    max_extra_abnormal: int
    reference_overrides: dict[str, ReferenceRange]
    severity_levels: tuple[str, ...]
    decimals: dict[str, int]
    unit_display: dict[str, str]

    def reference(self, name: str) -> ReferenceRange | None:
        """The reference range of `name` in this KB: its override if any, else the schema's."""
        override = self.reference_overrides.get(name)
        return override if override is not None else self.schema.biomarkers[name].reference

    def reference_range(
        self, name: str, age: float | None = None, sex: str | None = None
    ) -> tuple[float, float] | None:
        """The (low, high) normal range of `name` for this person under this KB."""
        reference = self.reference(name)
        return None if reference is None else reference.for_person(age, sex)

    def rules_for(self, label: str) -> list[DiagnosisRule]:
        """The rules that lead to `label`, in file order (empty for the normal label)."""
        return [rule for rule in self.diagnoses if rule.label == label]

    def systemic_findings(self, systemic: Mapping[str, Any] | None) -> set[str]:
        """Systemic findings (e.g. raised HbA1c) that follow from the given systemic values alone."""
        if not systemic:
            return set()
        from grok.knowledge.engine import finding_from_values  # local: engine imports this module

        age, sex = systemic.get("age_years"), systemic.get("sex")
        found = set()
        for rule in self.findings.values():
            if rule.kind == "systemic" and finding_from_values(rule, systemic, self, age, sex) is not None:
                found.add(rule.id)
        return found

    def diagnose(
        self, finding_ids: Iterable[str], systemic: Mapping[str, Any] | None = None
    ) -> list[tuple[str, tuple[str, ...]]]:
        """(label, supporting findings) for every label whose rule is met; the normal label when none is."""
        present = self.drop_superseded(set(finding_ids) | self.systemic_findings(systemic))
        return self.diagnose_present(frozenset(present), systemic)

    def drop_superseded(self, finding_ids: set[str]) -> set[str]:
        """The findings without those a more specific present finding supersedes (e.g. enlarged VCDR by cupping)."""
        dropped = {f for f, by in _supersessions(self) if f in finding_ids and not by.isdisjoint(finding_ids)}
        return set(finding_ids) - dropped

    def diagnose_present(
        self, present: frozenset[str] | set[str], systemic: Mapping[str, Any] | None = None
    ) -> list[tuple[str, tuple[str, ...]]]:
        """Like `diagnose`, for a set of findings that already includes the systemic ones."""
        met: dict[str, tuple[str, ...]] = {}
        for rule in self.diagnoses:
            supporting = rule.supporting(present)
            if supporting is None:
                continue
            if rule.systemic and not self._systemic_conditions_hold(rule.systemic, systemic or {}):
                continue
            met[rule.label] = tuple(dict.fromkeys((*met.get(rule.label, ()), *supporting)))
        superseded = {
            rule.label for rule in self.diagnoses if rule.label in met and any(o in met for o in rule.superseded_by)
        }
        for label in superseded:
            del met[label]
        if not met:
            return [(self.schema.normal_label, ())]
        return [(label, met[label]) for label in self.schema.label_names if label in met]

    def diagnoses_from_findings(
        self, finding_ids: Iterable[str], systemic: Mapping[str, Any] | None = None
    ) -> list[str]:
        """Labels (schema order) that the KB derives from these findings plus any systemic values given."""
        return [label for label, _ in self.diagnose(finding_ids, systemic)]

    def _systemic_conditions_hold(self, conditions: tuple[Condition, ...], systemic: Mapping[str, Any]) -> bool:
        from grok.knowledge.engine import condition_excess

        age, sex = systemic.get("age_years"), systemic.get("sex")
        return all(condition_excess(c, systemic.get(c.biomarker), self, age, sex) is not None for c in conditions)

    def decimals_of(self, name: str) -> int:
        """Decimals used when writing a value of biomarker `name`."""
        return self.decimals.get(name, self.decimals.get(f"unit:{self.schema.biomarkers[name].unit}", 2))


# ---------------------------------------------------------------------------------------------------------- loading
def available_versions() -> list[str]:
    """Knowledge base versions shipped in the package (e.g. ['v1'])."""
    folder = resources.files("grok.knowledge").joinpath("kb")
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def _version_file(version: str | None) -> Path:
    versions = available_versions()
    chosen = versions[-1] if version is None else (str(version) if str(version).startswith("v") else f"v{version}")
    if chosen not in versions:
        raise KnowledgeBaseError(f"unknown knowledge base version {version!r}; shipped versions: {versions}")
    return Path(str(resources.files("grok.knowledge").joinpath("kb", f"{chosen}.yaml")))


def load_knowledge_base(
    version: str | None = None, path: str | Path | None = None, schema: Schema | None = None
) -> KnowledgeBase:
    """Load and validate a knowledge base: a shipped version ('v1'; latest by default) or a YAML file by path."""
    file = str((Path(path) if path else _version_file(version)).resolve())
    schema = schema or load_schema()
    key = (file, id(schema))
    if key not in _LOADED:
        _LOADED[key] = (_read(file, schema), schema)
    return _LOADED[key][0]


_LOADED: dict[tuple[str, int], tuple[KnowledgeBase, Schema]] = {}  # schema kept so its id stays unique


def _read(file: str, schema: Schema) -> KnowledgeBase:
    try:
        with open(file, encoding="utf-8") as handle:
            raw = yaml.safe_load(handle)
    except FileNotFoundError as error:
        raise KnowledgeBaseError(f"{file}: knowledge base file not found") from error
    except yaml.YAMLError as error:
        raise KnowledgeBaseError(f"{file}: not valid YAML ({error})") from error
    return _Parser(file, schema).parse(raw)


class _Parser:
    """Turns the raw YAML mapping into a KnowledgeBase, raising KnowledgeBaseError naming file and key."""

    def __init__(self, file: str, schema: Schema) -> None:
        self.file = file
        self.schema = schema
        self.overrides: dict[str, ReferenceRange] = {}

    def fail(self, where: str, message: str) -> KnowledgeBaseError:
        return KnowledgeBaseError(f"{self.file}: {where}: {message}")

    def parse(self, raw: Any) -> KnowledgeBase:
        if not isinstance(raw, dict):
            raise self.fail("top level", "expected a mapping")
        self._unknown_keys(raw, _TOP_KEYS, "top level")
        for key in ("version", "findings", "diagnoses"):
            if key not in raw:
                raise self.fail(key, "required key is missing")
        levels = tuple(raw.get("severity_levels") or ("mild", "moderate", "severe"))
        self.overrides = {
            name: self._override(name, spec) for name, spec in (raw.get("reference_overrides") or {}).items()
        }
        findings: dict[str, FindingRule] = {}
        for index, spec in enumerate(self._list(raw, "findings")):
            rule = self._finding(spec, f"findings[{index}]", levels)
            if rule.id in findings:
                raise self.fail(f"findings[{index}].id", f"duplicate finding id {rule.id!r}")
            findings[rule.id] = rule
        for rule in findings.values():
            for other in rule.superseded_by:
                if other not in findings:
                    raise self.fail(f"findings (id {rule.id!r}).superseded_by", f"unknown finding id {other!r}")
        diagnoses = tuple(
            self._diagnosis(spec, f"diagnoses[{index}]", findings, levels)
            for index, spec in enumerate(self._list(raw, "diagnoses"))
        )
        core = tuple(raw.get("core_biomarkers") or ())
        for index, name in enumerate(core):
            self._biomarker(name, f"core_biomarkers[{index}]")
        decimals_raw = raw.get("decimals") or {}
        decimals = {f"unit:{unit}": int(d) for unit, d in (decimals_raw.get("units") or {}).items()}
        for name, d in (decimals_raw.get("biomarkers") or {}).items():
            self._biomarker(name, f"decimals.biomarkers.{name}")
            decimals[name] = int(d)
        return KnowledgeBase(
            version=int(raw["version"]),
            name=str(raw.get("name", Path(self.file).stem)),
            path=self.file,
            schema=self.schema,
            findings=findings,
            diagnoses=diagnoses,
            core_biomarkers=core,
            max_extra_abnormal=int(raw.get("max_extra_abnormal", 6)),
            reference_overrides=self.overrides,
            severity_levels=levels,
            decimals=decimals,
            unit_display={str(k): str(v) for k, v in (raw.get("unit_display") or {}).items()},
        )

    def _list(self, raw: dict, key: str) -> list:
        value = raw.get(key)
        if not isinstance(value, list) or not value:
            raise self.fail(key, f"expected a non-empty list, got {type(value).__name__}")
        return value

    def _unknown_keys(self, spec: dict, allowed: set[str], where: str) -> None:
        unknown = sorted(set(spec) - allowed)
        if unknown:
            raise self.fail(where, f"unknown key(s) {unknown}; expected some of {sorted(allowed)}")

    def _biomarker(self, name: Any, where: str) -> str:
        if name not in self.schema.biomarkers:
            raise self.fail(
                where, f"unknown biomarker {name!r}; expected a column of the schema ({self.schema.source_files[0]})"
            )
        return str(name)

    def _source(self, spec: dict, where: str) -> str:
        source = spec.get("source")
        if not isinstance(source, str) or not source.strip():
            raise self.fail(f"{where}.source", "every rule needs a source line (guideline or paper)")
        return source.strip()

    def _override(self, name: str, spec: Any) -> ReferenceRange:
        where = f"reference_overrides.{name}"
        self._biomarker(name, where)
        if not isinstance(spec, dict) or "low" not in spec or "high" not in spec:
            raise self.fail(where, "expected a mapping with low, high, source (and optional strata)")
        self._source(spec, where)
        strata = []
        for index, s in enumerate(spec.get("strata") or []):
            age = s.get("age")
            if age is not None and not (isinstance(age, list) and len(age) == 2):
                raise self.fail(f"{where}.strata[{index}].age", f"expected [min, max), got {age!r}")
            strata.append(
                ReferenceStratum(
                    low=float(s["low"]),
                    high=float(s["high"]),
                    sex=s.get("sex"),
                    age=tuple(map(float, age)) if age else None,
                )
            )
        low, high = float(spec["low"]), float(spec["high"])
        if low > high:
            raise self.fail(where, f"low ({low}) is above high ({high})")
        return ReferenceRange(low=low, high=high, strata=tuple(strata))

    def _condition(self, spec: Any, where: str, levels: tuple[str, ...]) -> Condition:
        if not isinstance(spec, dict):
            raise self.fail(where, f"expected a mapping like {{biomarker: X, above: reference}}, got {spec!r}")
        self._unknown_keys(spec, _CONDITION_KEYS, where)
        name = self._biomarker(spec.get("biomarker"), f"{where}.biomarker")
        operators = [op for op in OPERATORS if op in spec]
        if len(operators) != 1:
            raise self.fail(where, f"expected exactly one of {list(OPERATORS)}, got {operators}")
        operator = operators[0]
        raw_threshold = spec[operator]
        if raw_threshold == REFERENCE:
            threshold = None
            has_reference = name in self.overrides or self.schema.biomarkers[name].reference is not None
            if not has_reference:
                raise self.fail(f"{where}.{operator}", f"{name!r} has no reference range in the schema or overrides")
        elif isinstance(raw_threshold, (int, float)) and not isinstance(raw_threshold, bool):
            threshold = float(raw_threshold)
        else:
            raise self.fail(f"{where}.{operator}", f"expected a number or 'reference', got {raw_threshold!r}")
        grades = []
        for severity, distance in (spec.get("grades") or {}).items():
            if severity not in levels[1:]:
                raise self.fail(f"{where}.grades.{severity}", f"unknown severity; expected one of {list(levels[1:])}")
            if not isinstance(distance, (int, float)) or distance <= 0:
                raise self.fail(f"{where}.grades.{severity}", f"expected a positive distance, got {distance!r}")
            grades.append((severity, float(distance)))
        if [g for g, _ in grades] != [lvl for lvl in levels if lvl in dict(grades)]:
            raise self.fail(f"{where}.grades", f"grades must follow the order of severity_levels {list(levels)}")
        if any(b[1] <= a[1] for a, b in pairwise(grades)):
            raise self.fail(f"{where}.grades", "distances must increase with severity")
        return Condition(biomarker=name, operator=operator, threshold=threshold, grades=tuple(grades))

    def _finding(self, spec: Any, where: str, levels: tuple[str, ...]) -> FindingRule:
        if not isinstance(spec, dict):
            raise self.fail(where, "expected a mapping")
        self._unknown_keys(spec, _FINDING_KEYS, where)
        finding_id = spec.get("id")
        if not isinstance(finding_id, str) or not _SNAKE_CASE.match(finding_id):
            raise self.fail(f"{where}.id", f"expected a snake_case id, got {finding_id!r}")
        where = f"{where} (id {finding_id!r})"
        for key in ("display", "phrases"):
            if not spec.get(key):
                raise self.fail(f"{where}.{key}", "required key is missing or empty")
        kind = spec.get("kind", "retinal")
        if kind not in FINDING_KINDS:
            raise self.fail(f"{where}.kind", f"expected one of {list(FINDING_KINDS)}, got {kind!r}")
        if ("any" in spec) == ("all" in spec):
            raise self.fail(where, "give exactly one of 'any' or 'all' (a list of conditions)")
        key = "all" if "all" in spec else "any"
        raw_conditions = spec[key]
        if not isinstance(raw_conditions, list) or not raw_conditions:
            raise self.fail(f"{where}.{key}", "expected a non-empty list of conditions")
        conditions = tuple(self._condition(c, f"{where}.{key}[{i}]", levels) for i, c in enumerate(raw_conditions))
        if kind == "systemic":
            for c in conditions:
                if c.biomarker not in SYSTEMIC_COLUMNS:
                    raise self.fail(f"{where}.{key}", f"a systemic finding may only use {list(SYSTEMIC_COLUMNS)}")
        return FindingRule(
            id=finding_id,
            display=str(spec["display"]),
            phrases=tuple(map(str, spec["phrases"])),
            kind=kind,
            conditions=conditions,
            require_all=key == "all",
            source=self._source(spec, where),
            superseded_by=tuple(spec.get("superseded_by") or ()),
        )

    def _diagnosis(
        self, spec: Any, where: str, findings: dict[str, FindingRule], levels: tuple[str, ...]
    ) -> DiagnosisRule:
        if not isinstance(spec, dict):
            raise self.fail(where, "expected a mapping")
        self._unknown_keys(spec, _DIAGNOSIS_KEYS, where)
        label = spec.get("label")
        if label not in self.schema.label_names:
            raise self.fail(f"{where}.label", f"unknown label {label!r}; expected one of {self.schema.label_names}")
        if label == self.schema.normal_label:
            raise self.fail(f"{where}.label", f"{label!r} needs no rule: it is given when no other label is diagnosed")
        where = f"{where} (label {label!r})"
        lists = {}
        for key in ("all_of", "any_of", "none_of", "also_supported_by"):
            ids = spec.get(key) or []
            for finding_id in ids:
                if finding_id not in findings:
                    raise self.fail(
                        f"{where}.{key}", f"unknown finding id {finding_id!r}; expected one of {list(findings)}"
                    )
            lists[key] = tuple(ids)
        if not lists["all_of"] and not lists["any_of"]:
            raise self.fail(where, "a diagnosis needs at least one finding in all_of or any_of")
        superseded = tuple(spec.get("superseded_by") or ())
        for other in superseded:
            if other not in self.schema.label_names:
                raise self.fail(f"{where}.superseded_by", f"unknown label {other!r}")
        systemic = tuple(
            self._condition(c, f"{where}.systemic[{i}]", levels) for i, c in enumerate(spec.get("systemic") or [])
        )
        for c in systemic:
            if c.biomarker not in SYSTEMIC_COLUMNS:
                raise self.fail(f"{where}.systemic", f"systemic conditions may only use {list(SYSTEMIC_COLUMNS)}")
        return DiagnosisRule(
            label=label,
            systemic=systemic,
            superseded_by=superseded,
            source=self._source(spec, where),
            **lists,
        )


@lru_cache(maxsize=16)
def _supersessions(kb: KnowledgeBase) -> tuple[tuple[str, frozenset[str]], ...]:
    """(finding id, the ids that supersede it) for every finding that another can supersede."""
    return tuple((f.id, frozenset(f.superseded_by)) for f in kb.findings.values() if f.superseded_by)
