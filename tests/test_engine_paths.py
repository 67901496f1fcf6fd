"""Property test: `evaluate_row`'s fast path gives what the rule semantics (`condition_excess`, `finding_from_values`,
`diagnose`) give, on many seeded random rows with missing, boundary and stratified-range values."""

from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from grok.knowledge import load_knowledge_base
from grok.knowledge.base import KnowledgeBase
from grok.knowledge.engine import (
    ASSESSED_MODALITIES,
    Assessment,
    Finding,
    Quantity,
    diagnose,
    drop_superseded,
    evaluate_row,
    finding_from_values,
    missing_value,
)

KB = load_knowledge_base()
ROWS = 1000
ABSENT = object()  # the row has no such column
MISSING = (None, float("nan"), np.nan, pd.NA, ABSENT, "n/a")


def _number(value: Any) -> float | None:
    try:
        return None if missing_value(value) else float(value)
    except (TypeError, ValueError):
        return None


def reference_assessment(row: dict[str, Any], kb: KnowledgeBase) -> Assessment:
    """The assessment written out from the rule semantics, one definition at a time."""
    age = _number(row.get("age_years"))
    sex = None if missing_value(row.get("sex")) else str(row.get("sex"))
    quantities = []
    for biomarker in kb.schema.biomarkers.values():
        if biomarker.modality not in ASSESSED_MODALITIES:
            continue
        value, bounds = _number(row.get(biomarker.name)), kb.reference_range(biomarker.name, age, sex)
        low, high = bounds if bounds is not None else (None, None)
        if value is None:
            status = "unavailable"
        elif bounds is None:
            status = "normal"
        else:
            status = "low" if value < low else "high" if value > high else "normal"
        quantities.append(Quantity(biomarker.name, value, biomarker.unit, low, high, status))
    fired = [finding_from_values(rule, row, kb, row.get("age_years"), row.get("sex")) for rule in kb.findings.values()]
    fired = [f for f in fired if f is not None]
    kept = drop_superseded(kb, {f.id for f in fired})
    findings = tuple(f for f in fired if f.id in kept)
    systemic = {name: _number(row.get(name)) for name in ("sbp_mmhg", "dbp_mmhg", "hba1c_mmol_mol", "bmi_kg_m2")}
    systemic.update(age_years=age, sex=sex)
    diagnoses = diagnose(kb, [f.id for f in findings], systemic)
    return Assessment(tuple(quantities), findings, tuple((label, support) for label, support in diagnoses), systemic)


def _boundaries(kb: KnowledgeBase, name: str, age: float | None, sex: str | None) -> list[float]:
    """Values where a status or a finding changes for this person: range bounds, thresholds, grade distances."""
    points = list(kb.reference_range(name, age, sex) or ())
    for rule in kb.findings.values():
        for condition in rule.conditions:
            if condition.biomarker != name:
                continue
            bounds = kb.reference_range(name, age, sex)
            threshold = condition.threshold if condition.threshold is not None else None
            if threshold is None and bounds is not None:
                threshold = bounds[1] if condition.upward else bounds[0]
            if threshold is None:
                continue
            sign = 1.0 if condition.upward else -1.0
            points += [threshold, *(threshold + sign * distance for _, distance in condition.grades)]
    return points


def random_row(kb: KnowledgeBase, rng: random.Random) -> dict[str, Any]:
    """Ages on and around the strata edges, every kind of missing cell, values on, just off and far from every
    boundary, as Python floats, ints and numpy scalars."""
    age = rng.choice([40.0, 59.0, 59.999, 60.0, 60.001, 69.0, 200.0, float(rng.randint(18, 90)), *MISSING])
    sex = rng.choice(["F", "M", "F", "M", *MISSING])
    row: dict[str, Any] = {}
    for key, value in (("age_years", age), ("sex", sex)):
        if value is not ABSENT:
            row[key] = value
    age_number = None if age is ABSENT else _number(age)
    sex_text = sex if isinstance(sex, str) and sex in ("F", "M") else None
    for name, biomarker in kb.schema.biomarkers.items():
        if biomarker.modality not in ASSESSED_MODALITIES:
            continue
        draw = rng.random()
        if draw < 0.12:
            value = rng.choice(MISSING)
            if value is not ABSENT:
                row[name] = value
            continue
        points = _boundaries(kb, name, age_number, sex_text) or [float(rng.randint(0, 10))]
        point = rng.choice(points)
        if draw < 0.45:
            value = point
        elif draw < 0.75:
            value = point + rng.choice([-1, 1]) * rng.choice([1e-9, 1e-3, 0.5, 1.0])
        else:
            value = point * rng.uniform(0.3, 1.7)
        cast = rng.random()
        if biomarker.dtype == "int" or cast < 0.1:
            value = round(value) if cast < 0.5 else np.int64(round(value))
        elif cast < 0.2:
            value = np.float64(value)
        elif cast < 0.25:
            value = np.float32(value)
        row[name] = value
    return row


def _variant(tmp_path: Path, which: str) -> KnowledgeBase:
    """v1, or v1 plus an age- and sex-stratified override on a biomarker its rules compare with the reference range,
    or v1 plus a systemic finding on age (a biomarker that is not an assessed quantity)."""
    if which == "v1":
        return KB
    raw = copy.deepcopy(yaml.safe_load(Path(KB.path).read_text(encoding="utf-8")))
    if which == "stratified override":
        raw["reference_overrides"]["rnfl_avg_um"] = {
            "low": 22,
            "high": 40,
            "source": "test strata",
            "strata": [{"sex": "F", "low": 24, "high": 41}, {"age": [50, 65], "low": 20, "high": 38}],
        }
    else:
        raw["findings"].append(
            {
                "id": "older_age",
                "display": "older age",
                "phrases": ["older age"],
                "kind": "systemic",
                "any": [{"biomarker": "age_years", "at_least": 60}],
                "source": "test rule",
            }
        )
    path = tmp_path / "kb.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return load_knowledge_base(path=path)


def _same(fast: Assessment, reference: Assessment) -> bool:
    return (
        fast.quantities == reference.quantities
        and tuple(fast.findings) == tuple(Finding(*f) for f in reference.findings)
        and [tuple(d) for d in fast.diagnoses] == list(reference.diagnoses)
        and fast.systemic == reference.systemic
    )


@pytest.mark.parametrize("which", ["v1", "stratified override", "finding on age"])
def test_fast_path_equals_the_rule_semantics_on_random_rows(which: str, tmp_path: Path) -> None:
    kb = _variant(tmp_path, which)
    rng = random.Random(20261201)
    fired, statuses, mismatches = set(), set(), []
    for index in range(ROWS):
        row = random_row(kb, rng)
        fast, reference = evaluate_row(row, kb), reference_assessment(row, kb)
        if not _same(fast, reference):
            mismatches.append((index, row))
        fired.update(f.id for f in fast.findings)
        statuses.update(q.status for q in fast.quantities)
    assert not mismatches, f"{len(mismatches)} row(s) differ, first: {mismatches[0]}"
    assert fired == set(kb.findings)  # the rows reach every rule (both paths agreeing on nothing proves nothing)
    assert statuses == {"low", "normal", "high", "unavailable"}


def test_the_reference_path_tells_a_broken_fast_path_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparison can fail: an off-by-one in the fast path's `at_least` is caught."""
    import grok.knowledge.engine as engine

    compiled = engine._compiled_rules(KB)
    broken = tuple(
        (rule_id, require_all, tuple((n, "above" if op == "at_least" else op, t, u, g) for n, op, t, u, g in conds))
        for rule_id, require_all, conds in compiled
    )
    monkeypatch.setattr(engine, "_compiled_rules", lambda kb: broken)
    rng = random.Random(20261201)
    rows = [random_row(KB, rng) for _ in range(ROWS)]
    assert any(not _same(evaluate_row(row, KB), reference_assessment(row, KB)) for row in rows)
