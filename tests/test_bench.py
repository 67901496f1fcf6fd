"""GOU benchmark: parsers on narrative prose, task-3 scores with known answers, metrics, files, runner, judge."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from grok.bench.baselines import shuffled_baseline
from grok.bench.clinical import ClinicalScorer
from grok.bench.diagnosis import parse_diagnosis
from grok.bench.judge import JudgeAnswerError, LLMJudge
from grok.bench.predictions import load_predictions
from grok.bench.references import Reference, load_references
from grok.bench.report_quality import MeteorScorer, meteor_available, report_quality
from grok.bench.rubric import DeterministicRubric, RubricSettings
from grok.bench.text import AnalysedText, tokens_for_overlap_metrics
from grok.bench.vocabulary import build_vocabulary
from grok.knowledge.parser import load_knowledge_base
from grok.schema.schema import load_schema
from helpers import FakeEndpoint

FIXTURES = Path(__file__).parent / "fixtures" / "bench" / "reports.yaml"
SCHEMA = load_schema()
KB = load_knowledge_base()
VOCABULARY = build_vocabulary(SCHEMA, KB)
SCORER = ClinicalScorer(VOCABULARY, KB, tolerance=0.10)


def fixture_references() -> list[Reference]:
    records = yaml.safe_load(FIXTURES.read_text(encoding="utf-8"))
    return [Reference(r["id"], r["report"], tuple(r["labels"]), r["facts"], r["style"]) for r in records]


def write_instructions(path: Path, references: list[Reference]) -> Path:
    """The references as stage-one test JSONL (plus a non-report record that must be ignored)."""
    with open(path, "w", encoding="utf-8") as handle:
        for r in references:
            record = {
                "id": r.id,
                "eye_id": r.id,
                "task": "report",
                "style": r.style,
                "labels": list(r.labels),
                "facts": r.facts,
                "conversations": [
                    {"from": "human", "value": "<oct>\n<cfp>\nWrite the report."},
                    {"from": "gpt", "value": r.text},
                ],
            }
            handle.write(json.dumps(record) + "\n")
        handle.write(json.dumps({"id": "x_qa", "eye_id": references[0].id, "task": "biomarker_qa"}) + "\n")
    return path


def analyse(text: str) -> AnalysedText:
    return AnalysedText(text, VOCABULARY)


def score(reference: Reference, text: str):
    return SCORER.score(reference, analyse(text))


# ------------------------------------------------------------------------------------------------ task 1 parser
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("No signs of glaucoma. The eye is healthy.", ("Normal",)),
        ("Glaucoma, AMD and diabetic retinopathy are all unlikely; the retina is unremarkable.", ("Normal",)),
        (
            "The RNFL seems low, approximately 21 um. Glaucoma would typically show an enlarged cup, not seen here. "
            "Overall the picture is most consistent with Alzheimer's disease.",
            ("Alzheimer",),
        ),
        ("In summary, hypertensive retinopathy rather than diabetic retinopathy.", ("Hypertension",)),
        ("Findings suggest non-proliferative diabetic retinopathy in the left eye.", ("DiabeticRetinopathy",)),
        (
            "Conclusion: diabetes mellitus and systemic hypertension. No diabetic retinopathy.",
            ("Diabetes", "Hypertension"),
        ),
        ("Quantitative analysis: CST 250 um.\nConclusion: AMD is excluded; no disease.", ("Normal",)),
        ("The report is illegible.", ()),
        (
            "The differential diagnosis includes AMD and glaucoma; the thin RNFL and large cup favour glaucoma.",
            ("Glaucoma",),
        ),
        (
            "Although diabetic retinopathy was considered, no microaneurysms are seen. The picture favours AMD.",
            ("AMD",),
        ),
        ("GC-IPL thinning without cupping may reflect neurodegeneration, as in Alzheimer's disease.", ("Alzheimer",)),
    ],
)
def test_diagnosis_parser_on_narrative_negations_and_rule_outs(text, expected):
    assert parse_diagnosis(analyse(text)).labels == expected


def test_every_handwritten_reference_parses_to_its_label():
    for reference in fixture_references():
        assert parse_diagnosis(analyse(reference.text)).labels == reference.labels, reference.id


# ------------------------------------------------------------------------------------------------ task 3 scores
def test_correct_reports_score_one_on_task3_and_full_rubric_points():
    rubric = DeterministicRubric(RubricSettings(coverage_regions={}), SCHEMA)
    for reference in fixture_references():
        result = score(reference, reference.text)
        assert result.score == 1.0, (reference.id, result)
        points = rubric.score(reference, analyse(reference.text), result)
        assert (
            points.QuantitativeAccuracy == 20 and points.DiagnosisAccuracy == 20 and points.ReasoningConsistency == 15
        )


def test_one_wrong_number_scores_the_expected_fraction():
    reference = fixture_references()[0]  # 8 quoted values: CDR, RNFL, GC-IPL, CST, AVR, SBP, DBP, HbA1c
    wrong = reference.text.replace("approximately 20 um", "approximately 30 um")
    result = score(reference, wrong)
    assert len(result.quotes) == 8
    assert result.quantitative_accuracy == 7 / 8
    assert result.score == (7 / 8 + 1 + 1 + 1) / 4
    rnfl = next(q for q in result.quotes if q.biomarker == "rnfl_avg_um")
    assert rnfl.status == "contradicts"  # 30 um is normal, the measured 20 um is low
    rubric = DeterministicRubric(RubricSettings(coverage_regions={}), SCHEMA).score(reference, analyse(wrong), result)
    assert rubric.QuantitativeAccuracy == 17


def test_rubric_diagnosis_points_for_laterality_and_family():
    rubric = DeterministicRubric(
        RubricSettings(coverage_regions={}, label_families=[["Diabetes", "DiabeticRetinopathy"]]), SCHEMA
    )
    right_eye, diabetes = fixture_references()[0], fixture_references()[6]
    wrong_side = right_eye.text.replace("right eye", "left eye")
    assert rubric.score(right_eye, analyse(wrong_side), score(right_eye, wrong_side)).DiagnosisAccuracy == 15
    family = "HbA1c is 55 mmol/mol. Conclusion: diabetic retinopathy."
    assert rubric.score(diabetes, analyse(family), score(diabetes, family)).DiagnosisAccuracy == 10


def test_units_are_understood_and_unmeasured_biomarkers_are_hallucinations():
    reference = fixture_references()[6]  # Diabetes: HbA1c 55 mmol/mol measured, RNFL not measured
    result = score(reference, "HbA1c 7.2% is raised. The RNFL is 31 um. The diagnosis is diabetes.")
    statuses = {q.biomarker: q.status for q in result.quotes}
    assert statuses == {"hba1c_mmol_mol": "correct", "rnfl_avg_um": "hallucinated"}
    assert result.hallucinated == 1
    glaucoma = fixture_references()[0]
    in_mm = {q.biomarker: q.status for q in score(glaucoma, "The RNFL is 0.020 mm thick; glaucoma.").quotes}
    wrong_unit = {q.biomarker: q.status for q in score(glaucoma, "The RNFL is 20 mm thick; glaucoma.").quotes}
    assert in_mm == {"rnfl_avg_um": "correct"} and wrong_unit == {"rnfl_avg_um": "unit_mismatch"}


def test_a_negated_finding_is_not_counted_as_stated():
    reference = fixture_references()[0]
    result = score(reference, "There is no optic disc cupping and no RNFL thinning. Conclusion: glaucoma.")
    assert result.stated_findings == []
    assert "suspicious_optic_disc_cupping" in analyse("There is no optic disc cupping.").negated_findings()


def test_a_conclusion_unsupported_by_its_own_findings_is_flagged():
    reference = fixture_references()[3]  # Normal eye
    text = "The cup-to-disc ratio is 0.35 and the RNFL is 30 um, both normal. Overall this is glaucoma."
    result = score(reference, text)
    assert result.predicted_labels == ["Glaucoma"] and not result.consistent
    assert result.unsupported_labels == ["Glaucoma"] and result.derived_labels == ["Normal"]


# ------------------------------------------------------------------------------------------------ task 2 metrics
def _coco_inputs(candidates: list[str], references: list[str]) -> tuple[dict, dict]:
    gts = {i: [tokens_for_overlap_metrics(r)] for i, r in enumerate(references)}
    return gts, {i: [tokens_for_overlap_metrics(c)] for i, c in enumerate(candidates)}


def test_cider_and_rouge_match_pycocoevalcap_scorers_called_directly():
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    references = [r.text for r in fixture_references()]
    candidates = [references[0], *references[2:], references[1]]
    ours = report_quality(candidates, references)
    gts, res = _coco_inputs(candidates, references)
    assert ours["cider"] == pytest.approx(Cider().compute_score(gts, res)[0], rel=1e-9)
    assert ours["rouge_l"] == pytest.approx(Rouge().compute_score(gts, res)[0], rel=1e-9)


@pytest.mark.skipif(meteor_available() is not None, reason="METEOR needs Java")
def test_meteor_matches_pycocoevalcap_scorer_called_directly():
    from pycocoevalcap.meteor.meteor import Meteor

    first_sentences = [r.text.split(". ")[0] for r in fixture_references()[:4]]  # short: METEOR is slow per word
    candidates = [first_sentences[0], *first_sentences[2:], first_sentences[1]]
    gts, res = _coco_inputs(candidates, first_sentences)
    direct = Meteor()  # one Java process (start-up dominates): scored directly, then through our wrapper
    expected = direct.compute_score(gts, res)[0]
    wrapper = MeteorScorer()
    wrapper._scorer = direct
    ours = report_quality(candidates, first_sentences, meteor=wrapper)
    assert ours["meteor"] == pytest.approx(expected, rel=1e-6)
    assert 0 < ours["meteor"] < 1


def test_missing_java_is_reported_not_raised(monkeypatch):
    monkeypatch.setattr("grok.bench.report_quality.shutil.which", lambda name: None)
    metrics = report_quality(["a b c"], ["a b d"], meteor=MeteorScorer())
    assert metrics["meteor"] is None and "Java" in metrics["meteor_unavailable"]


# ------------------------------------------------------------------------------------------------ files
def test_bad_predictions_files_are_reported_with_file_and_line(tmp_path):
    path = tmp_path / "model_test.jsonl"
    lines = [
        json.dumps({"id": "S000001_R", "prediction": "Glaucoma.", "model": "m"}).encode(),
        json.dumps({"id": "S000001_R", "prediction": "AMD."}).encode(),
        json.dumps({"id": "S000002_L", "prediction": "  "}).encode(),
        b'{"id": "S000003_R", "prediction": "caf\xe9"}',
        b"not json",
        json.dumps({"prediction": "no id"}).encode(),
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    loaded = load_predictions(path, SCHEMA.label_names)
    kinds = {(i.kind, i.line) for i in loaded.issues}
    assert kinds == {("duplicate_id", 2), ("empty_text", 3), ("bad_encoding", 4), ("bad_json", 5), ("missing_id", 6)}
    assert all(str(path) in str(i) for i in loaded.issues)
    aligned = loaded.aligned(["S000001_R", "S000002_L", "S000003_R"])
    assert [p.text for p in aligned] == ["Glaucoma.", "", ""]  # missing ids are kept as failures
    assert loaded.issue_counts()["missing"] == 2 and loaded.model == "m"


def test_references_keep_only_report_records(tmp_path):
    references = load_references(write_instructions(tmp_path / "test.jsonl", fixture_references()))
    assert [r.id for r in references] == [r.id for r in fixture_references()]
    assert references[0].eye == "R" and references[0].facts["findings"]


# ------------------------------------------------------------------------------------------------ runner
def test_grok_eval_scores_models_and_baselines(make_config, tmp_path):
    from grok.bench.evaluate import run_evaluation

    references = fixture_references()
    reference_path = write_instructions(tmp_path / "test.jsonl", references)
    predictions = tmp_path / "artifacts" / "predictions" / "grok_test.jsonl"
    predictions.parent.mkdir(parents=True)
    with open(predictions, "w", encoding="utf-8") as handle:
        for r in references[:-1]:  # the last eye is missing: a counted failure
            handle.write(json.dumps({"id": r.id, "prediction": r.text, "model": "grok"}) + "\n")
    cfg = make_config(
        "eval", [f"reference_path={reference_path}", "embedding=null", "meteor=false", "bootstrap.resamples=50"]
    )
    summary = run_evaluation(cfg)
    assert set(summary) == {"grok", "baseline_majority", "baseline_oracle", "baseline_shuffled"}
    assert summary["baseline_oracle"]["clinical_score"] == 1.0
    assert summary["baseline_oracle"]["accuracy"] == 1.0
    assert summary["baseline_shuffled"]["clinical_score"] < 0.6
    assert summary["grok"]["clinical_score"] == pytest.approx(6 / 7)
    out = tmp_path / "artifacts" / "benchmark"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["models"]["grok"]["n_failures"] == 1
    assert any("missing" in issue for issue in metrics["models"]["grok"]["issues"])
    table = (out / "results.md").read_text()
    assert "| Task 1 | Macro-F1 |" in table and "baseline_oracle" in table and "[" in table
    assert (out / "plots" / "confusion_grok.png").stat().st_size > 0
    assert len((out / "per_report" / "grok.jsonl").read_text().splitlines()) == len(references)


def test_shuffled_control_never_keeps_its_own_report():
    references = fixture_references()
    shuffled = shuffled_baseline(references, seed=3)
    assert all(p.text != r.text for p, r in zip(shuffled, references, strict=True))


# ------------------------------------------------------------------------------------------------ judge
def _judge_default_reply(request: dict) -> str:
    """The fake judge's answer when no reply is queued: a label list or a valid rubric."""
    prompt = request["messages"][0]["content"]
    if "extract the final diagnosis" in prompt:
        return '{"labels": ["Glaucoma"]}'
    rubric = {
        "DiagnosisAccuracy": 20,
        "QuantitativeAccuracy": 18,
        "QualitativeAccuracy": 12,
        "EvidenceGrounding": 8,
        "ReasoningConsistency": 15,
        "CoverageCompleteness": 8,
        "ImageBiomarkerAlignment": 7,
        "ErrorSeverityPenalty": 0,
    }
    return json.dumps(rubric)


@pytest.fixture
def judge_endpoint():
    fake = FakeEndpoint(default_reply=_judge_default_reply)
    yield fake
    fake.close()


def test_llm_judge_validates_json_and_caches(judge_endpoint, tmp_path):
    from grok.bench.predictions import Prediction

    judge = LLMJudge(judge_endpoint.url, "fake", tmp_path / "cache", max_retries=1, timeout_s=5)
    reference = fixture_references()[0]
    judge_endpoint.replies = [(200, '{"labels": ["Glaucoma", "Cataract"]}')]  # invalid label: retried
    assert judge.labels(reference.text) == ["Glaucoma"]
    assert len(judge_endpoint.requests) == 2
    assert judge.labels(reference.text) == ["Glaucoma"] and len(judge_endpoint.requests) == 2  # cached
    judge_endpoint.replies = [(200, '{"DiagnosisAccuracy": 25}'), (200, "not json")]
    with pytest.raises(JudgeAnswerError, match="no valid answer"):
        judge.rubric(reference, "Some other report.")
    result = judge.evaluate([reference], [Prediction(reference.id, reference.text)], [["Glaucoma"]])
    assert result["parser_agreement"] == 1.0 and result["rubric"]["total"] == 88


def test_oracle_at_ceiling_and_shuffled_near_floor_on_syntheye(syntheye_dir, make_config, tmp_path):
    """Stage one's own reports (structured and narrative) as references: the parsers must read them perfectly."""
    from grok.bench.evaluate import run_evaluation
    from grok.cli.generate import run_generate

    instructions = tmp_path / "instructions"
    run_generate(
        make_config("generate", [f"input_table={syntheye_dir}/biomarkers.parquet", f"output_dir={instructions}",
                                 "progress=false"])
    )  # fmt: skip
    reference_path = instructions / "train.jsonl"  # the largest split, with both report styles
    styles = {json.loads(line).get("style") for line in reference_path.read_text().splitlines()}
    assert {"structured", "narrative"} <= styles
    cfg = make_config("eval", [f"reference_path={reference_path}", "embedding=null", "meteor=false",
                               "bootstrap.resamples=20", "baselines.majority=false"])  # fmt: skip
    summary = run_evaluation(cfg)
    oracle, shuffled = summary["baseline_oracle"], summary["baseline_shuffled"]
    assert oracle["clinical_score"] >= 0.98 and oracle["accuracy"] >= 0.95 and oracle["rubric_total"] >= 95
    metrics = json.loads((tmp_path / "artifacts" / "benchmark" / "metrics.json").read_text())["models"]
    task3 = metrics["baseline_shuffled"]["task3"]
    assert task3["finding_f1"] < 0.5 and task3["conclusion_correct"] < 0.5 and task3["quantitative_accuracy"] < 0.7
    assert shuffled["clinical_score"] < 0.5 * oracle["clinical_score"]


def test_grok_eval_with_the_openai_judge_config(judge_endpoint, make_config, tmp_path):
    from grok.bench.evaluate import run_evaluation

    reference_path = write_instructions(tmp_path / "test.jsonl", fixture_references()[:2])
    cfg = make_config("eval", [f"reference_path={reference_path}", "embedding=null", "meteor=false",
                               "bootstrap.resamples=10", "judge=openai", f"judge.base_url={judge_endpoint.url}",
                               "baselines.majority=false", "baselines.shuffled=false"])  # fmt: skip
    run_evaluation(cfg)
    judged = json.loads((tmp_path / "artifacts" / "benchmark" / "metrics.json").read_text())["models"]
    judge = judged["baseline_oracle"]["judge"]
    assert judge["rubric"]["total"] == 88 and judge["parser_agreement"] == 0.5  # fake judge always says Glaucoma
    assert len(list((tmp_path / "artifacts" / "benchmark" / "judge_cache").glob("*.json"))) == 4
