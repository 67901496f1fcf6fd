"""The benchmark's grounding figures: free-typed numbers, quoted values by source, input reliance."""

from __future__ import annotations

import pytest

from grok.bench.grounding import check_grounding, input_reliance, summarise_grounding

FACTS = {
    "systemic": {"sbp_mmhg": 151.6, "age_years": 63.0},
    "biomarkers": {"macula_central_um": 262.0, "cup_disc_ratio": 0.41},
    "quantities": [{"name": "macula_central_um", "low": 215.0, "high": 300.0}],
}


def _entry(text: str, report: str, key: str, kind: str, value: float, source: str) -> dict:
    start = report.index(text)
    return {"key": key, "kind": kind, "value": value, "source": source, "start": start, "end": start + len(text)}


def test_numbers_outside_the_grounding_are_free_typed_and_quotes_are_scored_by_source() -> None:
    report = "SBP 152 mmHg. CST ≈262 µm (normal 215–300 µm). VCDR ≈0.55. Review in 6 weeks."
    grounding = {
        "quantities": [
            _entry("152", report, "sbp_mmhg", "value", 152.0, "input"),
            _entry("262", report, "macula_central_um", "value", 262.0, "readout"),
            _entry("215", report, "macula_central_um", "low", 215.0, "knowledge_base"),
            _entry("300", report, "macula_central_um", "high", 300.0, "knowledge_base"),
            _entry("0.55", report, "cup_disc_ratio", "value", 0.55, "readout"),
        ]
    }
    check = check_grounding(report, grounding, FACTS, tolerance=0.10)
    assert check.numbers == 6 and check.free_typed == 1  # '6 weeks' is nobody's
    assert check.by_source == {"input": [1, 1], "readout": [1, 2], "knowledge_base": [2, 2]}  # 0.55 vs 0.41: off
    other_model = check_grounding(report, None, FACTS)  # a report without grounding: every number is free-typed
    assert other_model.free_typed == 6 and other_model.by_source == {}
    summary = summarise_grounding([check, other_model])
    assert summary["free_typed_per_report"] == pytest.approx(3.5) and summary["reports_with_free_typed"] == 2
    assert summary["quotes_by_source"]["readout"] == {"accuracy": 0.5, "n": 2}


def test_input_reliance_is_the_share_of_eyes_whose_stated_diagnosis_changes() -> None:
    own = [["AMD"], ["Glaucoma"], ["Normal"], ["Hypertension", "Diabetes"]]
    other = [["AMD"], ["Normal"], ["Normal"], ["Diabetes", "Hypertension"]]
    assert input_reliance(own, other) == {"changed": 0.25, "n": 4}
    with pytest.raises(ValueError):
        input_reliance(own, other[:2])
