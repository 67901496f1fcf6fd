"""The benchmark's absent-image count: values a report states for the quantities of an image it was written without."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from grok.bench.absent import image_keys_of
from grok.bench.predictions import Prediction, PredictionsFileError, load_predictions
from grok.bench.rubric import DeterministicRubric, RubricSettings
from grok.bench.runner import GOUBenchmark
from grok.utils.errors import InputError
from test_bench import SCHEMA, SCORER, VOCABULARY, fixture_references, write_instructions

EVAL_CONFIG = Path(__file__).resolve().parents[1] / "conf" / "eval.yaml"
IMAGE_MODALITIES = yaml.safe_load(EVAL_CONFIG.read_text(encoding="utf-8"))["image_modalities"]  # the config's mapping


def _score(text: str, images_absent: tuple[str, ...] | None) -> tuple[dict, dict]:
    """One report scored against the first fixture eye: (the model's metrics, its per-report record)."""
    reference = fixture_references()[0]
    benchmark = GOUBenchmark(
        [reference],
        SCHEMA,
        VOCABULARY,
        SCORER,
        DeterministicRubric(RubricSettings(coverage_regions={}), SCHEMA),
        meteor=False,
        bootstrap_resamples=5,
        image_keys=image_keys_of(SCHEMA, IMAGE_MODALITIES),
    )
    scored = benchmark.score("m", [Prediction(reference.id, text, images_absent=images_absent)])
    return scored.metrics, scored.per_report[0]


def test_the_config_mapping_gives_each_image_its_schema_quantities() -> None:
    keys = image_keys_of(SCHEMA, IMAGE_MODALITIES)
    assert set(keys) == {"oct", "cfp"}
    assert {"macula_central_um", "rnfl_avg_um"} <= keys["oct"] and "cup_disc_ratio" not in keys["oct"]
    assert {"cup_disc_ratio", "drusen_count"} <= keys["cfp"] and "sbp_mmhg" not in keys["oct"] | keys["cfp"]
    with pytest.raises(InputError, match=r"image_modalities\.oct.*\['fundus'\]"):
        image_keys_of(SCHEMA, {"oct": ["fundus"]})


def test_an_oct_value_stated_in_an_oct_absent_report_is_counted() -> None:
    metrics, record = _score("The central subfield thickness is 262 µm. Conclusion: glaucoma.", ("oct",))
    assert metrics["absent_image"] == {
        "reports": 1,
        "quantities_stated": 1,
        "reports_stating": 1,
        "by_image": {"oct": {"reports": 1, "quantities_stated": 1, "reports_stating": 1}},
    }
    assert record["images_absent"] == ["oct"]
    assert record["absent_image_quotes"] == [
        {"image": "oct", "biomarker": "macula_central_um", "value": 262.0, "unit": "um"}
    ]


def test_a_not_assessed_oct_quantity_is_not_counted() -> None:
    text = "Central subfield thickness: not assessed (no OCT). Conclusion: glaucoma."
    metrics, record = _score(text, ("oct",))
    assert metrics["absent_image"]["reports"] == 1
    assert metrics["absent_image"]["quantities_stated"] == 0 and metrics["absent_image"]["reports_stating"] == 0
    assert record["absent_image_quotes"] == []


def test_a_number_whose_unit_cannot_be_the_absent_quantitys_is_not_counted() -> None:
    # a garbled line puts the blood pressure after a thickness's name: mmHg is no thickness unit
    text = "- diastolic blood pressure: retinal nerve fibre layer thickness 82 mmHg. Conclusion: glaucoma."
    metrics, record = _score(text, ("oct",))
    assert record["absent_image_quotes"] == [] and metrics["absent_image"]["quantities_stated"] == 0
    metrics, record = _score("- retinal nerve fibre layer thickness 82 µm. Conclusion: glaucoma.", ("oct",))
    assert [q["biomarker"] for q in record["absent_image_quotes"]] == ["rnfl_avg_um"]


def test_a_cfp_value_in_an_oct_absent_report_is_not_counted() -> None:
    text = "The vertical cup-to-disc ratio is 0.78 and the blood pressure 128/80 mmHg. Conclusion: glaucoma."
    metrics, record = _score(text, ("oct",))
    assert {q["biomarker"] for q in record["quotes"]} == {"cup_disc_ratio", "sbp_mmhg", "dbp_mmhg"}  # task 3 read
    assert metrics["absent_image"]["quantities_stated"] == 0 and record["absent_image_quotes"] == []
    cfp_absent, _ = _score(text, ("cfp",))  # the same report written without the CFP: its cup-to-disc ratio counts
    assert cfp_absent["absent_image"]["quantities_stated"] == 1


def _write_rows(path: Path, value: object) -> Path:
    good = {"id": "S000001_R", "prediction": "Glaucoma.", "images_absent": ["cfp", "oct", "oct"]}
    other = {"id": "S000002_L", "prediction": "AMD.", "images_absent": value}
    path.write_text(json.dumps(good) + "\n" + json.dumps(other) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("value", [["fundus"], "oct", [3], {"oct": True}])
def test_a_bad_images_absent_value_is_refused_naming_file_row_field_and_value(value, tmp_path: Path) -> None:
    path = _write_rows(tmp_path / "model_test.jsonl", value)
    with pytest.raises(PredictionsFileError) as raised:
        load_predictions(path, SCHEMA.label_names, images=["oct", "cfp"])
    message = str(raised.value)
    assert f"{path}:2: bad_images_absent: 'S000002_L': field 'images_absent': {value!r}" in message
    assert load_predictions(path, SCHEMA.label_names).by_id["S000002_L"].images_absent is None  # images=None: unread


def test_images_absent_is_sorted_without_repeats_and_an_empty_list_means_none(tmp_path: Path) -> None:
    loaded = load_predictions(_write_rows(tmp_path / "model_test.jsonl", []), SCHEMA.label_names, images=["oct", "cfp"])
    assert loaded.by_id["S000001_R"].images_absent == ("cfp", "oct")
    assert loaded.by_id["S000002_L"].images_absent is None and not loaded.issues


def test_grok_eval_counts_absent_image_values_and_leaves_files_without_the_field_unchanged(
    make_config, tmp_path: Path
) -> None:
    from grok.bench.evaluate import run_evaluation

    references = fixture_references()
    reference_path = write_instructions(tmp_path / "test.jsonl", references)
    predictions = tmp_path / "artifacts" / "predictions"
    predictions.mkdir(parents=True)
    full, no_oct = predictions / "grok_test.jsonl", predictions / "grok_test_no_oct.jsonl"
    with open(full, "w", encoding="utf-8") as both, open(no_oct, "w", encoding="utf-8") as cfp_only:
        for reference in references:  # grok-infer's two files: the same model name in both
            both.write(json.dumps({"id": reference.id, "prediction": reference.text, "model": "grok"}) + "\n")
            row = {"id": reference.id, "prediction": reference.text, "model": "grok", "images_absent": ["oct"]}
            cfp_only.write(json.dumps(row) + "\n")
    overrides = [f"reference_path={reference_path}", "embedding=null", "meteor=false", "bootstrap.resamples=5"]
    out = tmp_path / "artifacts" / "benchmark"

    run_evaluation(make_config("eval", [*overrides, f"predictions=[{full}]"]))
    alone = json.loads((out / "metrics.json").read_text())["models"]
    table_alone = (out / "results.md").read_text()
    per_report_alone = (out / "per_report" / "grok.jsonl").read_text()
    assert set(alone["grok"]) == set(alone["baseline_oracle"]) and "absent_image" not in alone["grok"]
    assert "Absent image" not in table_alone and "absent_image" not in per_report_alone

    run_evaluation(make_config("eval", [*overrides, f"predictions=[{full},{no_oct}]"]))
    models = json.loads((out / "metrics.json").read_text())["models"]
    assert set(models) == {"grok", "grok_test_no_oct", "baseline_majority", "baseline_oracle", "baseline_shuffled"}
    assert models["grok"] == alone["grok"] and (out / "per_report" / "grok.jsonl").read_text() == per_report_alone
    oct_keys = image_keys_of(SCHEMA, IMAGE_MODALITIES)["oct"]
    records = [json.loads(line) for line in (out / "per_report" / "grok_test_no_oct.jsonl").read_text().splitlines()]
    stated = [sum(q["biomarker"] in oct_keys for q in record["quotes"]) for record in records]  # task 3's quotes
    assert sum(stated) > 0
    absent = models["grok_test_no_oct"]["absent_image"]
    assert absent["reports"] == len(references) and absent["quantities_stated"] == sum(stated)
    assert absent["reports_stating"] == sum(n > 0 for n in stated) and absent["by_image"]["oct"]["reports"] == 7
    table = (out / "results.md").read_text()
    row = next(line for line in table.splitlines() if "Values stated for the absent image (target 0)" in line)
    assert row.split(" | ")[2:] == ["–", str(sum(stated)), "–", "–", "– |"]  # grok, no_oct, the three baselines
    assert "- Absent image: reports whose prediction rows list `images_absent`" in table
