"""Knowledge base loading/validation and the rule engine."""

from __future__ import annotations

import copy
from pathlib import Path

import pandas as pd
import pytest
import yaml

from grok.knowledge import KnowledgeBaseError, evaluate_row, load_knowledge_base
from grok.knowledge.base import Condition
from grok.knowledge.engine import diagnoses_from_findings
from knowledge_rows import normal_row

KB = load_knowledge_base()
CONDITIONS = [
    pytest.param(rule.id, index, id=f"{rule.id}[{index}]")
    for rule in KB.findings.values()
    for index in range(len(rule.conditions))
]


def _threshold(condition: Condition, row: dict) -> float:
    if condition.threshold is not None:
        return condition.threshold
    low, high = KB.reference_range(condition.biomarker, row["age_years"], row["sex"])
    return high if condition.upward else low


def _step(name: str) -> float:
    return 1.0 if KB.schema.biomarkers[name].dtype == "int" else 1e-3


def _set_past(row: dict, condition: Condition, past: bool) -> None:
    """Put the condition's biomarker just past (or just before) its threshold."""
    t, step = _threshold(condition, row), _step(condition.biomarker)
    strict = condition.operator in ("above", "below")
    sign = 1 if condition.upward else -1
    if past:
        row[condition.biomarker] = t + sign * step if strict else t
    else:
        row[condition.biomarker] = t if strict else t - sign * step


def test_normal_row_has_no_findings_and_is_normal():
    assessment = evaluate_row(normal_row(KB), KB)
    assert assessment.findings == ()
    assert assessment.labels == [KB.schema.normal_label]
    assert {q.status for q in assessment.quantities} == {"normal"}


@pytest.mark.parametrize(("finding_id", "index"), CONDITIONS)
def test_each_rule_fires_just_past_its_threshold_and_not_before(finding_id, index):
    rule = KB.findings[finding_id]
    row = normal_row(KB)
    if rule.require_all:  # every other condition of an `all` rule is met
        for other in rule.conditions:
            _set_past(row, other, past=True)
    condition = rule.conditions[index]
    _set_past(row, condition, past=True)
    fired = {f.id: f for f in evaluate_row(row, KB).findings}
    assert finding_id in fired
    assert condition.biomarker in fired[finding_id].biomarkers
    _set_past(row, condition, past=False)
    assert finding_id not in {f.id for f in evaluate_row(row, KB).findings}


def test_severity_grades_grow_with_distance_past_threshold():
    row = normal_row(KB)
    severities = []
    for cdr in (0.7, 0.8, 0.9):
        row["cup_disc_ratio"] = cdr
        severities.append({f.id: f.severity for f in evaluate_row(row, KB).findings}["suspicious_optic_disc_cupping"])
    assert severities == ["mild", "moderate", "severe"]


def test_sex_dependent_range_changes_the_finding():
    # the schema gives women a lower CST upper limit (300 um) than men (310 um)
    for sex, expected in (("F", True), ("M", False)):
        row = normal_row(KB, sex=sex)
        row["macula_central_um"] = 305.0
        found = "centre_involving_macular_thickening" in {f.id for f in evaluate_row(row, KB).findings}
        assert found is expected, sex


def test_age_dependent_range_changes_the_finding():
    # GC-IPL lower limit is 63 um below age 60 and 60 um from 60 on
    for age, expected in ((55.0, True), (65.0, False)):
        row = normal_row(KB, age=age)
        row["gcipl_avg_um"] = 61.5
        found = "inner_retinal_thinning" in {f.id for f in evaluate_row(row, KB).findings}
        assert found is expected, age


@pytest.mark.parametrize("missing", [None, float("nan"), pd.NA])
def test_missing_values_are_unavailable_and_trigger_nothing(missing):
    row = normal_row(KB)
    row["cup_disc_ratio"] = missing  # would be the only trigger of the cupping findings
    del row["drusen_count"]  # a column the table lacks entirely
    assessment = evaluate_row(row, KB)
    by_name = assessment.by_name
    assert by_name["cup_disc_ratio"].status == "unavailable" and by_name["cup_disc_ratio"].value is None
    assert by_name["drusen_count"].status == "unavailable"
    assert assessment.findings == ()


def test_diagnoses_carry_their_supporting_findings():
    row = normal_row(KB)
    row.update(cup_disc_ratio=0.8, gcipl_avg_um=50.0, sbp_mmhg=165.0)
    diagnoses = {d.label: d.findings for d in evaluate_row(row, KB).diagnoses}
    assert diagnoses == {
        "Glaucoma": ("suspicious_optic_disc_cupping", "inner_retinal_thinning"),
        "Hypertension": ("raised_blood_pressure",),
    }


def test_a_more_specific_finding_supersedes_a_general_one():
    row = normal_row(KB)
    row.update(cup_disc_ratio=0.65, gcipl_avg_um=50.0)
    assert {f.id for f in evaluate_row(row, KB).findings} == {"enlarged_cup_disc_ratio", "inner_retinal_thinning"}
    assert evaluate_row(row, KB).labels == ["Glaucoma"]  # the second glaucoma rule
    row["cup_disc_ratio"] = 0.75
    assert {f.id for f in evaluate_row(row, KB).findings} == {"suspicious_optic_disc_cupping", "inner_retinal_thinning"}
    assert diagnoses_from_findings(KB, ["enlarged_cup_disc_ratio", "suspicious_optic_disc_cupping"]) == ["Glaucoma"]


def test_diagnoses_from_findings_uses_systemic_values_and_supersedes():
    assert diagnoses_from_findings(KB, []) == ["Normal"]
    assert diagnoses_from_findings(KB, ["drusen_rpe_changes"]) == ["AMD"]
    assert diagnoses_from_findings(KB, [], {"hba1c_mmol_mol": 55.0}) == ["Diabetes"]
    assert diagnoses_from_findings(KB, ["microvascular_lesions"], {"hba1c_mmol_mol": 55.0}) == ["DiabeticRetinopathy"]
    assert diagnoses_from_findings(KB, ["reduced_vascular_complexity"], {"sbp_mmhg": 150.0}) == ["Hypertension"]


def _write_kb(tmp_path: Path, mutate) -> Path:
    raw = yaml.safe_load(Path(KB.path).read_text(encoding="utf-8"))
    raw = copy.deepcopy(raw)
    mutate(raw)
    path = tmp_path / "kb.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda raw: raw["findings"][0]["any"][0].update(biomarker="cst_typo"), "unknown biomarker 'cst_typo'"),
        (lambda raw: raw["diagnoses"][0].update(label="Cataract"), "unknown label 'Cataract'"),
        (lambda raw: raw["diagnoses"][0].update(any_of=["no_such_finding"]), "unknown finding id 'no_such_finding'"),
        (lambda raw: raw["findings"][0].pop("source"), "needs a source"),
        (lambda raw: raw["diagnoses"][1].pop("source"), "needs a source"),
        (lambda raw: raw["findings"][0]["any"][0].update(abovee=3), "unknown key(s) ['abovee']"),
        (lambda raw: raw["findings"][0]["any"][0]["grades"].update(catastrophic=9), "unknown severity"),
        (
            lambda raw: raw["reference_overrides"].update(bogus={"low": 1, "high": 2, "source": "x"}),
            "unknown biomarker 'bogus'",
        ),
    ],
)
def test_loader_rejects_invalid_kb_naming_file_and_key(tmp_path, mutate, message):
    path = _write_kb(tmp_path, mutate)
    with pytest.raises(KnowledgeBaseError) as error:
        load_knowledge_base(path=path)
    assert str(path) in str(error.value) and message in str(error.value)


def test_reference_override_changes_the_range_and_systemic_rule_conditions(tmp_path):
    def mutate(raw):
        raw["reference_overrides"]["macula_central_um"] = {"low": 200, "high": 400, "source": "device X normative data"}
        raw["diagnoses"][0]["systemic"] = [{"biomarker": "age_years", "at_least": 50}]  # AMD only from age 50

    kb = load_knowledge_base(path=_write_kb(tmp_path, mutate))
    row = normal_row(kb)
    row["macula_central_um"] = 350.0
    assert evaluate_row(row, kb).findings == ()
    assert kb.reference_range("macula_central_um", 50, "F") == (200.0, 400.0)
    assert diagnoses_from_findings(kb, ["drusen_rpe_changes"], {"age_years": 45}) == ["Normal"]
    assert diagnoses_from_findings(kb, ["drusen_rpe_changes"], {"age_years": 55}) == ["AMD"]


def test_unknown_version_is_an_error():
    with pytest.raises(KnowledgeBaseError, match="shipped versions"):
        load_knowledge_base("v99")


def test_versions_sort_by_number_so_latest_is_the_highest(tmp_path, monkeypatch):
    import grok.knowledge.parser as parser

    for name in ("v1", "v2", "v10"):
        (tmp_path / f"{name}.yaml").write_text("version: 1\n", encoding="utf-8")
    monkeypatch.setattr(parser, "_shipped_folder", lambda: tmp_path)
    assert parser.available_versions() == ["v1", "v2", "v10"]
    assert parser.shipped_version(tmp_path / "v10.yaml") == "v10" and parser.shipped_version(KB.path) is None
