"""The chain-of-thought writer and instruction builders."""

from __future__ import annotations

import random
import re

import pytest

from grok.grounding.spans import strip_conversation, strip_marks
from grok.knowledge import evaluate_row, load_knowledge_base
from grok.knowledge.engine import diagnoses_from_findings
from grok.knowledge.factcheck import numbers_in, stated_labels
from grok.knowledge.instructions import TASKS, EyeCase, InstructionBuilder
from grok.knowledge.writer import ReportWriter, conclude
from knowledge_rows import normal_row, random_row

KB = load_knowledge_base()
WRITER = ReportWriter(KB)
BUILDER = InstructionBuilder(WRITER)
SCHEMA = KB.schema


def plain(text: str) -> str:
    """The writer's text without its quantity marks (what a record holds)."""
    return strip_marks(text)[0]


def _case(row, labels, eye="R"):
    assessment = evaluate_row(row, KB)
    return EyeCase(
        "S000001_R",
        eye,
        {"oct": "oct/a.png", "cfp": "cfp/a.png"},
        tuple(labels),
        assessment,
        conclude(assessment, labels),
    )


def _rows(n, seed=0):
    rng = random.Random(seed)
    for _ in range(n):
        row = random_row(KB, rng)
        yield row, [rng.choice(SCHEMA.label_names)] if rng.random() < 0.5 else evaluate_row(row, KB).labels


def test_structured_report_has_three_parts_with_values_units_and_ranges():
    row = normal_row(KB, sex="M")
    row.update(macula_central_um=352.0, hba1c_mmol_mol=61.0, microaneurysm_count=3)
    row["rnfl_avg_um"] = None
    text = plain(WRITER.structured(*_assess(row, ["DiabeticRetinopathy"]), random.Random(0)))
    quantitative, rest = text.split("Qualitative findings:")
    findings, conclusion = rest.split("Conclusion:")
    assert quantitative.startswith("Quantitative analysis:")
    assert "352 µm" in quantitative and "220–310 µm" in quantitative
    assert "(RNFL): not" in quantitative or "(RNFL): not measured" in quantitative
    assert "CST 352 µm" in findings or "CST of 352 µm" in findings
    assert "centre-involving macular thickening" in findings.lower()
    assert stated_labels(conclusion, SCHEMA) == {"DiabeticRetinopathy"}


def _assess(row, labels):
    assessment = evaluate_row(row, KB)
    return assessment, conclude(assessment, labels)


def test_listed_quantities_are_core_plus_abnormal():
    row = normal_row(KB)
    row["inl_elm_central_um"] = 200.0  # not in the core set, abnormal
    names = [q.name for q in WRITER.listed_quantities(evaluate_row(row, KB))]
    assert set(KB.core_biomarkers) <= set(names)
    assert "inl_elm_central_um" in names and "inl_elm_outer_um" not in names


def test_extra_abnormal_measures_are_capped_but_finding_biomarkers_always_listed():
    row = normal_row(KB)
    extras = [n for n in KB.schema.oct_biomarkers if n not in KB.core_biomarkers][: KB.max_extra_abnormal + 4]
    for rank, name in enumerate(extras):  # the last ones lie furthest above their range
        low, high = KB.reference_range(name, row["age_years"], row["sex"])
        row[name] = high + (rank + 1) * 0.05 * (high - low)
    row["microaneurysm_count"] = 2  # not core, but behind a finding
    names = {q.name for q in WRITER.listed_quantities(evaluate_row(row, KB))}
    assert "microaneurysm_count" in names
    listed_extras = [n for n in extras if n in names]
    assert listed_extras == extras[-KB.max_extra_abnormal :]


def test_rounding_never_hides_an_abnormal_value():
    row = normal_row(KB, age=65.0)
    row["gcipl_avg_um"] = 84.4  # upper limit 84 um from age 60
    text = plain(WRITER.structured(*_assess(row, ["Normal"]), random.Random(0)))
    assert "84.4 µm" in text


def test_conclusion_never_states_a_diagnosis_without_a_supporting_finding():
    for index, (row, labels) in enumerate(_rows(400)):
        case = _case(row, labels)
        findings = case.assessment.finding_ids
        derivable = set(diagnoses_from_findings(KB, findings, case.assessment.systemic))
        for diagnosis in case.conclusion.diagnoses:
            assert diagnosis.label == SCHEMA.normal_label or diagnosis.findings, (index, diagnosis)
        rng = random.Random(index)
        structured = plain(WRITER.structured(case.assessment, case.conclusion, rng))
        narrative = plain(WRITER.narrative(case.assessment, case.conclusion, rng, "right", "man", "60"))
        for text in (structured, narrative):
            stated = stated_labels(text, SCHEMA)
            assert stated <= derivable, (index, stated, derivable, text)
            assert stated == set(case.conclusion.labels), (index, text)


def test_unsupported_label_is_not_asserted_and_flags_uncertainty():
    row = normal_row(KB)  # nothing abnormal, yet the table says glaucoma
    case = _case(row, ["Glaucoma"])
    assert case.conclusion.label_supported is False
    text = plain(WRITER.structured(case.assessment, case.conclusion, random.Random(0)))
    conclusion = text.split("Conclusion:")[1]
    assert "glaucoma" not in conclusion.lower()
    assert "uncertain" in conclusion.lower() or "limited" in conclusion.lower()


def test_narrative_is_one_paragraph_of_paper_length_with_numbers_and_eliminations():
    lengths = []
    for index, (row, labels) in enumerate(_rows(60, seed=3)):
        case = _case(row, labels)
        text = plain(WRITER.narrative(case.assessment, case.conclusion, random.Random(index), "left", "woman", "58"))
        assert "\n" not in text
        lengths.append(len(text.split()))
        for finding in case.assessment.findings:  # each finding's first number is tied to it in the text
            value = case.assessment.by_name[finding.biomarkers[0]]
            assert plain(WRITER.value(value)) in text
    assert min(lengths) >= 100 and max(lengths) <= 330, (min(lengths), max(lengths))
    normal_text = plain(WRITER.narrative(*_assess(normal_row(KB), ["Normal"]), random.Random(0), "right", "man", "50"))
    assert (
        "against glaucoma" in normal_text or "glaucoma is unlikely" in normal_text or "glaucoma unlikely" in normal_text
    )


def test_same_seed_same_text_and_seeds_vary_phrasing():
    row = normal_row(KB)
    row.update(cup_disc_ratio=0.82, gcipl_avg_um=52.0)
    case = _case(row, ["Glaucoma"])
    texts = [plain(WRITER.structured(case.assessment, case.conclusion, random.Random(seed))) for seed in range(8)]
    assert texts[0] == plain(WRITER.structured(case.assessment, case.conclusion, random.Random(0)))
    assert len(set(texts)) > 1
    numbers = {tuple(numbers_in(t)) for t in texts}  # phrasing varies, the numbers do not
    assert len({tuple(sorted(n)) for n in numbers}) == 1


@pytest.mark.parametrize("task", TASKS)
def test_every_task_builds_a_conversation_with_image_placeholders_and_patient_context(task):
    row = normal_row(KB, age=63.0, sex="M")
    row.update(sbp_mmhg=150.0, dbp_mmhg=92.0, drusen_count=6)
    case = _case(row, ["AMD"])
    turns = strip_conversation(BUILDER.conversation(task, case, "structured", random.Random(1)))[0]
    assert [t["from"] for t in turns][:2] == ["human", "gpt"]
    assert turns[0]["value"].startswith("<oct>\n<cfp>\n")
    assert "63-year-old" in turns[0]["value"] and "150/92" in turns[0]["value"]
    assert "macular thickness" not in turns[0]["value"]  # image quantities are read from the images
    assert all(t["value"] for t in turns)
    if task == "multiturn":
        assert len(turns) == 6 and "<oct>" not in turns[2]["value"]
    if task in ("diagnosis", "evidence"):
        assert re.search(r"drusen count (of )?6\b", turns[1]["value"])


def test_missing_image_drops_its_placeholder_and_the_prompt_says_it_is_missing():
    assessment = evaluate_row(normal_row(KB), KB)
    case = EyeCase("S1_L", "L", {"cfp": "cfp/a.png"}, ("Normal",), assessment, conclude(assessment, ["Normal"]))
    turns = strip_conversation(BUILDER.conversation("report", case, "narrative", random.Random(0)))[0]
    assert turns[0]["value"].startswith("No OCT image.\n<cfp>\n") and "<oct>" not in turns[0]["value"]
    assert "single-paragraph" in turns[0]["value"]
