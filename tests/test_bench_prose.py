"""GOU benchmark on real-world prose: the paper-style fixture (tune and held-out halves), ConText, external
references without `facts` (not scored / facts from a biomarker table), the converter."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from grok.bench.classification import classification_metrics
from grok.bench.context import ContextRulesError, parse_rules
from grok.bench.convert import ConversionError, read_external, reference_records
from grok.bench.diagnosis import parse_diagnosis
from grok.bench.facts import with_table_facts
from grok.bench.references import ReferenceError, load_references
from grok.bench.report import ROWS
from grok.bench.text import AnalysedText
from grok.bench.vocabulary import build_vocabulary
from grok.knowledge import load_knowledge_base
from grok.schema.schema import load_schema

PROSE = Path(__file__).parent / "fixtures" / "bench" / "prose"
SCHEMA = load_schema()
KB = load_knowledge_base()
VOCABULARY = build_vocabulary(SCHEMA, KB)
LOWER_IS_BETTER = {("task1", "unparsed"), ("task3", "hallucinated_per_report")}


def prose_fixture(split: str | None = None) -> list[dict]:
    records = yaml.safe_load((PROSE / "reports.yaml").read_text(encoding="utf-8"))
    return [r for r in records if split is None or r["split"] == split]


def fixture_scores(split: str) -> dict[str, float]:
    """Task-1 macro-F1 (each report scored as its own prediction) and quantity extraction recall/precision."""
    truth, predicted = [], []
    hits = extracted = wanted = 0
    for record in prose_fixture(split):
        analysed = AnalysedText(record["report"], VOCABULARY)
        truth.append(record["labels"])
        predicted.append(list(parse_diagnosis(analysed).labels))
        labelled = {
            (key, float(v))
            for key, values in record["quantities"].items()
            for v in (values if isinstance(values, list) else [values])
        }
        found = {(q.biomarker, q.value) for q in analysed.quoted_values}
        hits, extracted, wanted = hits + len(labelled & found), extracted + len(found), wanted + len(labelled)
    macro_f1 = classification_metrics(truth, predicted, SCHEMA.label_names)["macro_f1"]
    return {"macro_f1": macro_f1, "recall": hits / wanted, "precision": hits / extracted}


def analyse(text: str) -> AnalysedText:
    return AnalysedText(text, VOCABULARY)


# ------------------------------------------------------------------------------------------------ the fixture
def test_fixture_is_paper_style_and_split_before_tuning():
    records = prose_fixture()
    assert len(records) >= 150 and len({r["id"] for r in records}) == len(records)
    assert all(130 <= len(r["report"].split()) <= 300 for r in records)
    assert {r["split"] for r in records} == {"tune", "heldout"}
    assert all(set(r["labels"]) <= set(SCHEMA.label_names) and r["quantities"] for r in records)
    assert {label for r in records for label in r["labels"]} == set(SCHEMA.label_names)
    assert sum(len(r["labels"]) > 1 for r in records) >= 10


@pytest.mark.parametrize("split", ["tune", "heldout"])
def test_parser_and_extractor_meet_the_targets_on_each_half(split):
    scores = fixture_scores(split)
    assert scores["macro_f1"] >= 0.95, scores
    assert scores["recall"] >= 0.95 and scores["precision"] >= 0.95, scores


# ------------------------------------------------------------------------------------------------ ConText
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Preserved thickness without exudation supports a diagnosis of dry AMD.", ("AMD",)),
        ("The absence of haemorrhage or exudation points to grade 1 hypertensive retinopathy.", ("Hypertension",)),
        ("The lack of alternative pathology makes this most consistent with early glaucomatous optic neuropathy.",
         ("Glaucoma",)),
        ("In a patient with diabetes, the enlarged cup is most consistent with glaucoma.", ("Glaucoma",)),
        ("Glaucoma is not suspected. The eye is healthy.", ("Normal",)),
        ("The normal HbA1c diminishes the likelihood of diabetic retinopathy; the picture favours AMD.", ("AMD",)),
        ("The findings are most consistent with early glaucomatous optic neuropathy.", ("Glaucoma",)),
        ("The reduced fractal dimension suggests a neurodegenerative pattern rather than glaucoma.", ("Alzheimer",)),
        ("In this man with diabetes the lesions indicate moderate NPDR with DME.", ("DiabeticRetinopathy",)),
        ("Diabetes mellitus with non-proliferative diabetic retinopathy.", ("DiabeticRetinopathy",)),
        ("Glaucoma cannot be excluded, but the drusen make this most consistent with dry AMD.", ("AMD",)),
        ("There is nothing to suggest glaucoma, AMD, diabetes or hypertension. The retina is unremarkable.",
         ("Normal",)),
        ("No microaneurysms, haemorrhages or drusen are seen, and the cupping indicates glaucoma.", ("Glaucoma",)),
    ],
)  # fmt: skip
def test_context_scopes_negation_hedges_and_history(text, expected):
    assert parse_diagnosis(analyse(text)).labels == expected


def test_a_negation_governs_its_phrase_not_the_rest_of_the_sentence():
    analysed = analyse("No drusen, haemorrhages or microaneurysms are seen, which argues for glaucoma.")
    assert {m.key: m.negated for m in analysed.label_mentions} == {"Glaucoma": False}
    assert analysed.negated_findings() >= {"drusen_rpe_changes", "microvascular_lesions"}
    assert not analysed.stated_findings()


def test_first_character_branches_match_exactly_like_the_plain_longest_first_alternation():
    import re

    from grok.bench.context import load_context_rules

    raw = yaml.safe_load((Path(__file__).parents[1] / "src" / "grok" / "knowledge" / "context.yaml").read_text())
    patterns = sorted((p for t in raw["triggers"] for p in t["phrases"]), key=len, reverse=True)
    plain = re.compile(r"\b(?:" + "|".join(f"(?:{p})" for p in patterns) + r")\b", re.IGNORECASE)
    context = load_context_rules()
    for record in prose_fixture():
        for start, end in analyse(record["report"]).sentences:
            text = record["report"][start:end]
            assert [t[:2] for t in context.sentence(text).triggers] == [m.span() for m in plain.finditer(text)], text


def test_bad_context_rules_name_the_entry():
    with pytest.raises(ContextRulesError, match=r"rules.yaml: triggers\[0\]\.category"):
        parse_rules({"triggers": [{"category": "maybe", "phrases": ["no"]}], "conclusion": ["overall"]}, "rules.yaml")
    with pytest.raises(ContextRulesError, match=r"triggers\[0\]\.phrases\[0\]: invalid regular expression"):
        parse_rules({"triggers": [{"category": "negated", "phrases": ["(no"]}], "conclusion": ["x"]}, "rules.yaml")


# ------------------------------------------------------------------------------------------------ quantities
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The neurosensory retina measures roughly 205 µm.", [("macula_central_um", 205.0)]),
        ("The photoreceptor-RPE complex is thin at 40 µm.", [("isos_rpe_avg_um", 40.0)]),
        ("The IS/OS-to-RPE interval measures 31 µm.", [("isos_rpe_avg_um", 31.0)]),
        ("There is a cup of roughly 0.6.", [("cup_disc_ratio", 0.6)]),
        ("The RNFL seems low at approximately 22 µm, which argues against AMD.", [("rnfl_avg_um", 22.0)]),
        ("The central subfield (normal 215–300 µm) measures 342 µm.", [("macula_central_um", 342.0)]),
        ("Blood pressure is 153.7 over 97.1 mmHg, above the threshold of 140/90 mmHg.",
         [("sbp_mmhg", 153.7), ("dbp_mmhg", 97.1)]),
        ("The fundus shows seven microaneurysms, 13 intraretinal haemorrhages and 5 hard exudates.",
         [("microaneurysm_count", 7.0), ("haemorrhage_count", 13.0), ("hard_exudate_count", 5.0)]),
        ("The arteriolar and venular fractal dimensions are 1.38 and 1.36.",
         [("arterial_fractal_dim", 1.38), ("venular_fractal_dim", 1.36)]),
        ("The fractal dimensions are reduced (1.372 arteriolar, 1.375 venular).",
         [("arterial_fractal_dim", 1.372), ("venular_fractal_dim", 1.375)]),
        ("This 65-year-old man has type 2 diabetes and a BMI of 33.9 kg/m².", [("bmi_kg_m2", 33.9)]),
        ("The RNFL and GC-IPL are below their lower limits of 21 µm and 60 µm.", []),
        ("The optic disc diameter is 1,850 µm.", [("disc_vertical_diameter_um", 1850.0)]),
    ],
)  # fmt: skip
def test_quantities_written_the_ways_prose_writes_them(text, expected):
    assert [(q.biomarker, q.value) for q in analyse(text).quoted_values] == expected


# ------------------------------------------------------------------------------------------------ external data
def write_reports_csv(path: Path, records: list[dict]) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "report", "label"])
        for record in records:
            writer.writerow([record["id"], record["report"], ";".join(record["labels"])])
    return path


def external_reference_file(tmp_path: Path, records: list[dict]) -> Path:
    reports = read_external(write_reports_csv(tmp_path / "reports.csv", records), "auto", SCHEMA, _COLUMNS)
    path = tmp_path / "references.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in reference_records(reports, "reports.csv")))
    return path


_COLUMNS = {"id": "id", "report": "report", "label": "label"}


def test_table_facts_are_what_stage_one_writes(make_config, tmp_path):
    from grok.cli.generate import run_generate

    instructions = tmp_path / "instructions"
    run_generate(make_config("generate", [f"input_table={PROSE / 'table.csv'}", f"output_dir={instructions}",
                                          "progress=false"]))  # fmt: skip
    stage_one = {}
    for split in ("train", "val", "test"):
        for line in (instructions / f"{split}.jsonl").read_text().splitlines():
            record = json.loads(line)
            if record["task"] == "report":
                stage_one[record["id"]] = record["facts"]
    references = load_references(external_reference_file(tmp_path, prose_fixture()[:40]), SCHEMA)
    assert not any(r.facts for r in references)
    completed = with_table_facts(references, PROSE / "table.csv", KB)
    assert [r.facts for r in completed] == [stage_one[r.id] for r in references]


def test_a_table_without_the_reference_eyes_is_an_error(tmp_path):
    references = load_references(external_reference_file(tmp_path, prose_fixture()[:3]), SCHEMA)
    table = tmp_path / "table.csv"
    lines = (PROSE / "table.csv").read_text().splitlines()
    table.write_text("\n".join([lines[0], *[line for line in lines[1:] if not line.startswith("S000008,L")]]) + "\n")
    with pytest.raises(ReferenceError, match=r"table.csv: no row for 1 reference id\(s\), e.g. \['S000008_L'\]"):
        with_table_facts(references, table, KB)


def _numbers(metrics: dict, path: tuple[str, ...]):
    value = metrics
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


@pytest.mark.parametrize("with_table", [False, True])
def test_perfect_self_match_beats_every_baseline_on_every_reported_metric(with_table, make_config, tmp_path):
    from grok.bench.evaluate import run_evaluation

    records = prose_fixture()[::3]  # 56 reports, every label set (the whole fixture is scored above)
    reference_path = external_reference_file(tmp_path, records)
    predictions = tmp_path / "self_test.jsonl"
    predictions.write_text("".join(json.dumps({"id": r["id"], "prediction": r["report"]}) + "\n" for r in records))
    overrides = [f"reference_path={reference_path}", f"predictions=[{predictions}]", "embedding=null",
                 "meteor=false", "bootstrap.resamples=20", "baselines.oracle=false"]  # fmt: skip
    if with_table:
        overrides.append(f"reference_table={PROSE / 'table.csv'}")
    run_evaluation(make_config("eval", overrides))
    out = tmp_path / "artifacts" / "benchmark"
    models = json.loads((out / "metrics.json").read_text())["models"]
    reported = 0
    for _, _, path in ROWS:
        own = _numbers(models["self"], path)
        if own is None:
            continue
        for baseline in ("baseline_majority", "baseline_shuffled"):
            other = _numbers(models[baseline], path)
            if other is None:
                continue
            reported += 1
            assert own <= other if path in LOWER_IS_BETTER else own >= other - 1e-9, (path, baseline, own, other)
    table = (out / "results.md").read_text()
    if with_table:
        assert reported >= 30 and models["self"]["task3"]["quantitative_accuracy"] >= 0.98
        assert models["self"]["task3"]["conclusion_correct"] >= 0.95 and "not scored" not in table
    else:
        assert reported >= 10 and "task3" not in models["self"]
        assert "QuantitativeAccuracy" not in models["self"]["rubric"] and "total" not in models["self"]["rubric"]
        assert "| Task 3 |" not in table and "- Task 3 not scored:" in table and "reference_table" in table


# ------------------------------------------------------------------------------------------------ converter
def test_paper_release_json_converts_to_references_and_predictions(tmp_path):
    release = [
        {"id": "1000001_21015_0_0", "image": "cfp/1000001.png", "octs": ["oct/1000001_64.png"], "label": "Glaucoma",
         "conversations": [{"from": "human", "value": "<image>\nWrite the report."},
                           {"from": "gpt", "value": "The cup is large. Overall, glaucoma."}]},
        {"id": "1000002_21015_0_0", "image": "cfp/1000002.png", "octs": [], "label": "Diabetic Retinopathy",
         "conversations": [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "NPDR with DME."}]},
    ]  # fmt: skip
    path = tmp_path / "release.json"
    path.write_text(json.dumps(release))
    reports = read_external(path, "auto", SCHEMA, _COLUMNS)
    assert [r.labels for r in reports] == [("Glaucoma",), ("DiabeticRetinopathy",)]
    records = reference_records(reports, str(path))
    assert records[0]["conversations"][1]["value"] == "The cup is large. Overall, glaucoma."
    assert records[0]["images"] == {"cfp": "cfp/1000001.png", "oct": ["oct/1000001_64.png"]}
    out = tmp_path / "refs.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert [r.labels for r in load_references(out, SCHEMA)] == [("Glaucoma",), ("DiabeticRetinopathy",)]


@pytest.mark.parametrize(
    ("content", "suffix", "message"),
    [
        ('[{"id": "a", "label": "Cataract", "conversations": [{"from": "gpt", "value": "x"}]}]', ".json",
         r"release.json: record 0: field 'label': unknown label 'Cataract'"),
        ('[{"id": "a", "label": "AMD", "conversations": [{"from": "human", "value": "x"}]}]', ".json",
         r"record 0: field 'conversations': no non-empty 'gpt' turn"),
        ("id,text\na,report\n", ".csv", r"release.csv: missing column\(s\) \['report'\]; found \['id', 'text'\]"),
        ("id,report,label\na,x,AMD\na,y,AMD\n", ".csv", r"duplicate id 'a'"),
        ("id,report,label\na,,AMD\n", ".csv", r"release.csv: row 2: field 'report': empty report for id 'a'"),
    ],
)  # fmt: skip
def test_converter_errors_name_file_record_and_field(content, suffix, message, tmp_path):
    path = tmp_path / f"release{suffix}"
    path.write_text(content)
    with pytest.raises(ConversionError, match=message):
        read_external(path, "auto", SCHEMA, _COLUMNS)


def test_grok_convert_cli_writes_both_files_and_exits_2_on_bad_input(tmp_path):
    source = write_reports_csv(tmp_path / "model.csv", prose_fixture()[:5])
    command = [sys.executable, "-m", "grok.cli.convert", f"paths.root_dir={tmp_path}", f"input={source}"]
    outputs = [f"reference_out={tmp_path / 'ref.jsonl'}", f"predictions_out={tmp_path / 'my-llm_test.jsonl'}"]
    done = subprocess.run([*command, *outputs], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    predictions = [json.loads(line) for line in (tmp_path / "my-llm_test.jsonl").read_text().splitlines()]
    assert len(predictions) == 5 and predictions[0]["model"] == "my-llm"
    assert len(load_references(tmp_path / "ref.jsonl", SCHEMA)) == 5
    bad = tmp_path / "bad.csv"
    bad.write_text("id,report,label\nx,some report,Cataract\n")
    failed = subprocess.run([*command[:-1], f"input={bad}", f"reference_out={tmp_path / 'bad.jsonl'}"],
                            capture_output=True, text=True)  # fmt: skip
    assert failed.returncode == 2 and "bad.csv: row 2: field 'label': unknown label 'Cataract'" in failed.stderr
    assert not (tmp_path / "bad.jsonl").exists()
