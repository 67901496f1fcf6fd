"""Reading a knowledge-base YAML: the shipped versions, the file's validation against the schema, the cache."""

from __future__ import annotations

import re
from importlib import resources
from itertools import pairwise
from pathlib import Path
from typing import Any

import yaml

from grok.knowledge.base import (
    FINDING_KINDS,
    OPERATORS,
    SYSTEMIC_COLUMNS,
    Condition,
    DiagnosisRule,
    FindingRule,
    KnowledgeBase,
    KnowledgeBaseError,
)
from grok.schema.schema import ReferenceRange, ReferenceStratum, Schema, load_schema

REFERENCE = "reference"
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


def _shipped_folder() -> Path:
    return Path(str(resources.files("grok.knowledge").joinpath("kb")))


def available_versions() -> list[str]:
    """Knowledge base versions shipped in the package, oldest first (e.g. ['v1', 'v2', 'v10'])."""
    names = [p.name.removesuffix(".yaml") for p in _shipped_folder().iterdir() if p.name.endswith(".yaml")]
    return sorted(names, key=lambda name: (len(name), name))


def shipped_version(path: str | Path) -> str | None:
    """The shipped version ('v1') that `path` is the file of, or None for a knowledge base of your own."""
    path = Path(path).resolve()
    return path.stem if path.parent == _shipped_folder().resolve() and path.stem in available_versions() else None


def _version_file(version: str | None) -> Path:
    versions = available_versions()
    chosen = versions[-1] if version is None else (str(version) if str(version).startswith("v") else f"v{version}")
    if chosen not in versions:
        raise KnowledgeBaseError(f"unknown knowledge base version {version!r}; shipped versions: {versions}")
    return _shipped_folder() / f"{chosen}.yaml"


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
