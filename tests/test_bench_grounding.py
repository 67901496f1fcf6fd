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


def test_grok_eval_reports_grounding_and_input_reliance(make_config, tmp_path) -> None:
    import json

    from grok.bench.evaluate import run_evaluation
    from test_bench import fixture_references, write_instructions

    references = fixture_references()
    reference_path = write_instructions(tmp_path / "test.jsonl", references)
    predictions = tmp_path / "artifacts" / "predictions"
    (predictions / "other_eye").mkdir(parents=True)
    with (
        open(predictions / "grok_test.jsonl", "w", encoding="utf-8") as own,
        open(predictions / "other_eye" / "grok_test.jsonl", "w", encoding="utf-8") as other,
    ):
        for index, reference in enumerate(references):
            text = reference.text
            found = number_spans(text)
            grounding = {"source": "auto", "quantities": [{"start": s, "end": e} for s, e in found[:-1]]}
            own.write(json.dumps({"id": reference.id, "prediction": text, "grounding": grounding}) + "\n")
            donor = references[(index + 1) % len(references)] if index % 2 == 0 else reference
            other.write(json.dumps({"id": reference.id, "prediction": donor.text}) + "\n")
    cfg = make_config(
        "eval", [f"reference_path={reference_path}", "embedding=null", "meteor=false", "bootstrap.resamples=20"]
    )
    run_evaluation(cfg)
    metrics = json.loads((tmp_path / "artifacts" / "benchmark" / "metrics.json").read_text())["models"]
    with_numbers = sum(bool(number_spans(r.text)) for r in references)
    assert metrics["grok"]["grounding"]["free_typed_per_report"] == pytest.approx(with_numbers / len(references))
    assert metrics["baseline_oracle"]["grounding"]["free_typed_per_report"] > 1  # no grounding field: all free
    changed = metrics["grok"]["input_reliance"]["changed"]
    donors_differ = [
        set(references[i].labels) != set(references[(i + 1) % len(references)].labels)
        for i in range(0, len(references), 2)
    ]
    assert changed == pytest.approx(sum(donors_differ) / len(references))  # the parser reads each label right
    table = (tmp_path / "artifacts" / "benchmark" / "results.md").read_text()
    assert "| Grounding | Free-typed numbers / report |" in table and "another eye's images" in table


def number_spans(text: str) -> list[tuple[int, int]]:
    from grok.bench.grounding import NUMBER

    return [(m.start(), m.end()) for m in NUMBER.finditer(text)]
