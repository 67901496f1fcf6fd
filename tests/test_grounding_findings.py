"""The finding read-out: fitted in closed form, it decides findings resting on estimates, and the report it leads to
never quotes a number that contradicts its own findings or conclusion."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from grok.bench.clinical import ClinicalScorer
from grok.bench.references import Reference
from grok.bench.text import AnalysedText
from grok.bench.vocabulary import build_vocabulary
from grok.grounding.config import GroundingSettings, knowledge_base_of, quantity_tokens_of
from grok.grounding.findings import WITHHELD, FindingDecider, FindingReadout
from grok.grounding.model import QuantityGrounding
from grok.grounding.readout import out_of_fold_estimates, ridge_maps
from grok.grounding.render import ReportRenderer, render_marked
from grok.grounding.spans import strip_marks
from grok.grounding.values import SOURCE_CODES, QuantityStatistics, table_from_values
from grok.knowledge.engine import evaluate_row
from grok.knowledge.phrasing import PhraseRng, biomarker_texts
from grok.knowledge.writer import ReportWriter, conclude

SETTINGS = GroundingSettings()
KB = knowledge_base_of(SETTINGS)
TOKENS = quantity_tokens_of(SETTINGS, KB)
WRITER = ReportWriter(KB)
VOCABULARY = build_vocabulary(KB.schema, KB)
# a healthy 60-year-old woman: stated systemic values, every image-derived value inside its range
HEALTHY = {"age_years": 60.0, "sex": "F", "sbp_mmhg": 120.0, "dbp_mmhg": 75.0, "hba1c_mmol_mol": 36.0}


def _image_values() -> dict[str, float]:
    values = {}
    for key in TOKENS.keys:
        bounds = KB.reference_range(key, 60.0, "F")
        if key not in HEALTHY and bounds is not None:
            values[key] = (bounds[0] + bounds[1]) / 2
    for key in ("drusen_count", "microaneurysm_count", "haemorrhage_count", "hard_exudate_count"):
        values[key] = 0.0
    return values


def _sources(row: dict, source: str) -> dict[str, str]:
    return {key: ("input" if key in HEALTHY else source) for key in row if key != "sex"}


def _consistency(text: str, row: dict) -> tuple[bool, list[str]]:
    """The benchmark's conclusion-consistency check of `text` for an eye with these true values."""
    truth = evaluate_row(row, KB)
    facts = {
        "systemic": {k: row[k] for k in HEALTHY},
        "biomarkers": {k: v for k, v in row.items() if k not in HEALTHY},
        "findings": truth.finding_ids,
        "quantities": [{"name": q.name, "low": q.low, "high": q.high} for q in truth.quantities],
    }
    score = ClinicalScorer(VOCABULARY, KB).score(
        Reference("eye", "", tuple(truth.labels), facts), AnalysedText(text, VOCABULARY)
    )
    return score.consistent, score.own_findings


def test_the_finding_readout_is_fitted_once_as_scikit_learn_would_and_saved_as_buffers() -> None:
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedGroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    generator = np.random.default_rng(0)
    x = generator.normal(size=(120, 3)) * [1.0, 5.0, 0.2] + [0.0, 10.0, 1.0]
    y = np.stack([x[:, 1] + generator.normal(size=120) > 10.0, np.zeros(120, dtype=bool)], axis=1)
    y[:2, 1] = True  # two positives: too few to fit, that finding keeps the rules
    readout = FindingReadout(3, 2)
    decided = readout.fit(torch.tensor(x), torch.tensor(y, dtype=torch.float32), [0.01, 0.1, 1.0], folds=4)
    assert decided == 1 and readout.fitted.tolist() == [True, False]
    splits = list(StratifiedGroupKFold(4, shuffle=True, random_state=0).split(x, y[:, 0], range(120)))
    options = {"cv": splits, "max_iter": 3000}
    reference = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=[0.01, 0.1, 1.0], **options))
    reference.fit(x, y[:, 0])
    expected = torch.tensor(reference.decision_function(x), dtype=torch.float32)
    torch.testing.assert_close(readout(torch.tensor(x, dtype=torch.float32))[:, 0], expected, atol=1e-3, rtol=1e-3)
    reloaded = FindingReadout(3, 2)
    reloaded.load_state_dict(readout.state_dict())
    assert torch.equal(reloaded.fitted, readout.fitted) and torch.equal(reloaded.weight, readout.weight)


def test_a_finding_keeps_the_rules_where_they_beat_its_classifier_out_of_fold() -> None:
    generator = np.random.default_rng(1)
    x = generator.normal(size=(200, 2))
    y = np.stack([x[:, 0] > 0.5, x[:, 1] + 0.8 * generator.normal(size=200) > 0.0], axis=1)
    # the rules: exact for the first finding (a threshold on its value), coin flips for the second
    rules = np.stack([x[:, 0] > 0.5, generator.random(200) > 0.5], axis=1)
    readout = FindingReadout(2, 2)
    readout.fit(torch.tensor(x), torch.tensor(y, dtype=torch.float32), [0.1, 1.0], rules=torch.tensor(rules))
    assert readout.fitted.tolist() == [False, True]
    classifier, by_rules = readout.cv_f1.T.tolist()
    assert by_rules[0] == 1.0 > classifier[0] and classifier[1] > by_rules[1]


def test_out_of_fold_estimates_are_as_poor_as_on_unseen_images_where_in_sample_ones_overfit() -> None:
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randn(80, 10, 20, generator=generator)  # 200 features for 80 images
    targets = torch.randn(80, 1, generator=generator)  # no signal at all
    weight, bias = ridge_maps(tokens.flatten(1).double().numpy(), targets.double().numpy(), [1e-3, 1e-2])
    in_sample = tokens.flatten(1).double().numpy() @ weight.T + bias
    out_of_fold = out_of_fold_estimates(tokens, targets, [1e-3, 1e-2], folds=5).numpy()

    def r2(estimate: np.ndarray) -> float:
        truth = targets.numpy()
        return 1 - float(((estimate - truth) ** 2).sum() / ((truth - truth.mean()) ** 2).sum())

    assert r2(in_sample) > 0.9 and r2(out_of_fold) < 0.1


def test_out_of_fold_estimates_keep_a_subjects_eyes_in_one_fold() -> None:
    generator = torch.Generator().manual_seed(2)
    tokens = torch.randn(40, 10, 20, generator=generator).repeat_interleave(2, dim=0)  # two near-identical eyes
    tokens = tokens + 0.01 * torch.randn(tokens.shape, generator=generator)
    targets = torch.randn(40, 1, generator=generator).repeat_interleave(2, dim=0)  # a subject's value, no signal
    subjects = [f"S{i // 2}" for i in range(80)]

    def r2(estimate: torch.Tensor) -> float:
        return 1 - float(((estimate - targets) ** 2).sum() / ((targets - targets.mean()) ** 2).sum())

    by_image = out_of_fold_estimates(tokens, targets, [1e-3, 1e-2], folds=5)
    by_subject = out_of_fold_estimates(tokens, targets, [1e-3, 1e-2], folds=5, groups=subjects)
    assert r2(by_image) > 0.5 and r2(by_subject) < 0.1  # the other eye in the fit leaks the value


def test_stated_values_are_judged_by_the_rules_exactly_as_stage_one_does() -> None:
    row = {**HEALTHY, **_image_values(), "cup_disc_ratio": 0.8, "hba1c_mmol_mol": 60.0}
    everything_stated = {key: "input" for key in row if key != "sex"}
    said = {finding: False for finding in KB.findings}  # the classifier says no to everything: ignored here
    decision = FindingDecider(KB).decide(row, everything_stated, said)
    engine = evaluate_row(row, KB)
    assert [f.id for f in decision.assessment.findings] == engine.finding_ids
    assert decision.assessment.labels == engine.labels and not decision.withheld


def test_an_estimate_that_contradicts_the_decided_findings_is_withheld_and_the_report_stays_consistent() -> None:
    row = {**HEALTHY, **_image_values(), "drusen_count": 1.0}  # a count estimated at 1 passes "count > 0"
    decider = FindingDecider(KB)
    rules_only = decider.decide(row, _sources(row, "readout"), {})
    assert "drusen_rpe_changes" in rules_only.assessment.finding_ids  # what thresholding the estimates says
    decision = decider.decide(row, _sources(row, "readout"), {"drusen_rpe_changes": False})
    assert "drusen_rpe_changes" not in decision.assessment.finding_ids
    assert decision.withheld == {"drusen_count"}
    assert decision.assessment.by_name["drusen_count"].status == WITHHELD
    marked = WRITER.structured(decision.assessment, conclude(decision.assessment, []), PhraseRng("0:eye"))
    text, spans = strip_marks(marked)
    assert not any(TOKENS.symbol(s.symbol).key == "drusen_count" for s in spans)  # the count is not quoted
    consistent, own = _consistency(text, row)
    assert consistent and "drusen_rpe_changes" not in own
    # without withholding, the same decided findings with the count quoted are inconsistent
    quoted_anyway = WRITER.structured(rules_only.assessment, conclude(decision.assessment, []), PhraseRng("0:eye"))
    assert not _consistency(strip_marks(quoted_anyway)[0], row)[0]


def test_a_finding_the_classifier_reads_from_the_images_is_stated_without_a_threshold_claim() -> None:
    row = {**HEALTHY, **_image_values()}
    decision = FindingDecider(KB).decide(row, _sources(row, "readout"), {"suspicious_optic_disc_cupping": True})
    (finding,) = decision.assessment.findings
    assert finding.id == "suspicious_optic_disc_cupping" and finding.biomarkers == ()
    assert decision.assessment.labels == ["Glaucoma"]
    text = strip_marks(WRITER.structured(decision.assessment, conclude(decision.assessment, []), PhraseRng("1")))[0]
    assert "read from the images" in text and "glaucoma" in text.split("Conclusion:")[1].lower()
    assert _consistency(text, row)[0]


def _grounding() -> QuantityGrounding:
    k = len(TOKENS.keys)
    return QuantityGrounding(
        TOKENS, QuantityStatistics(np.zeros(k), np.ones(k)), torch.arange(100, 100 + len(TOKENS.symbols)), 16,
        findings_kb=KB,
    )  # fmt: skip


def _batch(row: dict) -> tuple[dict, torch.Tensor]:
    """A one-eye batch stating the systemic values of `row`, and its image-derived values as read-out estimates."""
    table = table_from_values(row, TOKENS, KB, sex="F", stated=HEALTHY)
    batch = {
        "quantity_values": torch.tensor(table.values, dtype=torch.float32)[None],
        "quantity_stated": torch.tensor(table.stated)[None],
        "quantity_low": torch.tensor(table.low, dtype=torch.float32)[None],
        "quantity_high": torch.tensor(table.high, dtype=torch.float32)[None],
        "quantity_sex": ["F"],
    }
    return batch, torch.where(torch.tensor(table.stated)[None], math.nan, batch["quantity_values"])


def test_the_grounding_module_decides_at_inference_and_withholds_the_estimate() -> None:
    grounding = _grounding()
    drusen = list(KB.findings).index("drusen_rpe_changes")
    grounding.finding_readout.fitted[drusen] = True
    grounding.finding_readout.bias[drusen] = -5.0  # says "no drusen" whatever the values
    batch, estimates = _batch({**HEALTHY, **_image_values(), "drusen_count": 1.0})
    resolved = grounding.resolve(batch, estimates, "auto")
    column = TOKENS.key_index["drusen_count"]
    assert math.isnan(resolved.values[0, column]) and resolved.source[0, column] == SOURCE_CODES["withheld"]
    assert "drusen_rpe_changes" not in resolved.decisions[0].assessment.finding_ids
    assert grounding.resolve(batch, estimates, None).decisions is None  # teacher forcing: the table as it is


def test_a_float32_estimate_written_0_70_meets_at_least_0_7_as_the_text_reads() -> None:
    assert float(torch.tensor(0.7)) < 0.7  # what a float32 table holds
    batch, estimates = _batch({**HEALTHY, **_image_values(), "cup_disc_ratio": 0.7})
    decision = _grounding().resolve(batch, estimates, "auto").decisions[0]
    assert "suspicious_optic_disc_cupping" in decision.assessment.finding_ids  # the rules on "0.70"


def test_the_renderer_keeps_the_generated_quantitative_section_and_writes_the_decided_findings() -> None:
    row = {**HEALTHY, **_image_values(), "cup_disc_ratio": 0.75}
    decision = FindingDecider(KB).decide(row, _sources(row, "readout"), {"suspicious_optic_disc_cupping": True})
    tokenizer = type("Tokenizer", (), {"convert_tokens_to_ids": staticmethod(lambda t: list(range(len(t))))})()
    renderer = ReportRenderer(tokenizer, TOKENS, KB, writer=WRITER)
    values = [row.get(key, math.nan) for key in TOKENS.keys]
    sources = [SOURCE_CODES["input" if key in HEALTHY else "readout"] for key in TOKENS.keys]
    generated = "Quantitative analysis:\n- VCDR ≈0.75.\nQualitative findings:\n- None (the LM's own judgement)."
    text, quoted, written = renderer.with_decided_findings(generated, [], decision, values, sources, values, "eye")
    assert text.endswith(written) and written.startswith("Qualitative findings:\n")
    assert text.startswith("Quantitative analysis:\n- VCDR ≈0.75.\nQualitative findings:\n")
    assert "the LM's own judgement" not in text and "Glaucoma" in text.split("Conclusion:")[1].title()
    for q in quoted:  # every number the writer added stands where its span says
        assert text[q.start : q.end] == q.text
    assert any(q.key == "cup_disc_ratio" and q.source == "readout" for q in quoted)


@pytest.mark.parametrize("marker", ["≈", "~"])
def test_render_marked_marks_estimates_and_records_spans(marker: str) -> None:
    row = {**HEALTHY, **_image_values(), "cup_disc_ratio": 0.75}
    assessment = evaluate_row(row, KB)
    marked = WRITER.structured(assessment, conclude(assessment, []), PhraseRng("2"))
    text, quoted = render_marked(
        marked, TOKENS, biomarker_texts(KB), row, _sources(row, "readout"), [math.nan] * len(TOKENS.keys), marker
    )
    estimated = [q for q in quoted if q.source == "readout"]
    assert estimated and all(text[q.start - len(marker) : q.start] == marker for q in estimated)
    assert all(text[q.start : q.end] == q.text for q in quoted)


def test_a_streaming_client_gets_the_writers_section_once_whatever_the_model_streamed() -> None:
    from grok.serve.engine import _stream_tail

    written = "Qualitative findings:\n- Drusen (mild): ...\nConclusion: AMD."
    kept = "Quantitative analysis:\n- CST ≈262 µm."
    text = f"{kept}\n{written}"
    for streamed in (f"{kept}\nQualitative findings:", f"{kept}\n\nQualitative findings:", f"{kept}\nConclusion:"):
        received = streamed + _stream_tail(streamed, text, written)
        assert received.count("Quantitative analysis:") == 1 and received.count("- Drusen (mild)") == 1
        assert received.count("Qualitative findings:") == 1 and received.endswith("Conclusion: AMD.")
    assert f"{kept}\nQualitative findings:" + _stream_tail(f"{kept}\nQualitative findings:", text, written) == text


def test_modality_dropout_fits_on_a_copy_of_every_eye_per_image_with_its_estimates_missing(monkeypatch) -> None:
    grounding = _grounding()
    seen = {}

    def capture(self, inputs, targets, cs, folds, rules, candidates, groups):
        seen.update(inputs=inputs, targets=targets, groups=groups)
        return 0

    monkeypatch.setattr(FindingReadout, "fit", capture)
    row = {**HEALTHY, **_image_values()}
    values = torch.tensor([[row.get(key, math.nan) for key in TOKENS.keys]] * 3, dtype=torch.float32)
    targets = torch.eye(3, len(KB.findings))
    grounding.fit_finding_readout(values, ["F"] * 3, targets, [1.0], 2, groups=["a", "a", "b"], modality_dropout=True)
    inputs = seen["inputs"]
    assert inputs.shape[0] == 9 and torch.equal(seen["targets"], targets.repeat(3, 1))
    assert seen["groups"] == ["a", "a", "b"] * 3  # a subject's copies stay in its folds
    for copy, modality in ((1, "oct"), (2, "cfp")):
        columns = [TOKENS.key_index[key] for key in TOKENS.image_keys[modality]]
        other = [TOKENS.key_index[key] for key in TOKENS.image_keys["cfp" if modality == "oct" else "oct"]]
        block = inputs[3 * copy : 3 * copy + 3]
        assert (block[:, columns] == 0).all() and (block[:, other] != 0).any()  # missing: the training mean
    grounding.fit_finding_readout(values, ["F"] * 3, targets, [1.0], 2)
    assert seen["inputs"].shape[0] == 3  # off by default
