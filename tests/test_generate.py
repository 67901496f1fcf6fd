"""grok-generate: splits, record format, determinism, resume, summary, the table checked before anything is written."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from grok.cli.generate import run_generate
from grok.knowledge import load_knowledge_base
from grok.knowledge.generate import RecordFactory
from grok.schema.validate import TableValidationError
from knowledge_rows import make_table

KB = load_knowledge_base()
SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def table_path(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("table")
    table = make_table(KB, n_subjects=40, seed=1)
    table.to_parquet(folder / "biomarkers.parquet")
    grey, colour = Image.new("L", (8, 8), 90), Image.new("RGB", (8, 8), (180, 90, 40))
    for column, image in (("oct_path", grey), ("cfp_path", colour)):  # the check on read decodes every image
        for relative in table[column]:
            (folder / relative).parent.mkdir(exist_ok=True)
            image.save(folder / relative)
    return folder / "biomarkers.parquet"


def _run(make_config, table: Path, out: Path, *overrides: str):
    cfg = make_config("generate", [f"input_table={table}", f"output_dir={out}", "progress=false", *overrides])
    return run_generate(cfg)


def _records(out: Path) -> dict[str, list[dict]]:
    return {
        s: [json.loads(line) for line in (out / f"{s}.jsonl").read_text(encoding="utf-8").splitlines()] for s in SPLITS
    }


def _bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def test_records_follow_the_contract_and_splits_are_by_subject(make_config, table_path, tmp_path):
    summary = _run(make_config, table_path, tmp_path / "out")
    records = _records(tmp_path / "out")
    subjects = {s: {r["eye_id"].split("_")[0] for r in records[s]} for s in SPLITS}
    assert not (
        subjects["train"] & subjects["val"]
        or subjects["train"] & subjects["test"]
        or subjects["val"] & subjects["test"]
    )
    test_reports = [r for r in records["test"] if r["task"] == "report"]
    assert len(test_reports) == len(records["test"]) == len({r["eye_id"] for r in records["test"]})
    assert all(r["id"] == r["eye_id"] for r in test_reports)
    assert Counter(r["task"] for r in records["train"]).keys() == {
        "report",
        "diagnosis",
        "biomarker_qa",
        "evidence",
        "multiturn",
    }
    assert len({r["id"] for s in SPLITS for r in records[s]}) == sum(len(v) for v in records.values())
    record = records["train"][0]
    assert set(record) == {
        "id",
        "eye_id",
        "split",
        "task",
        "style",
        "images",
        "conversations",
        "quantity_spans",
        "labels",
        "facts",
    }
    assert record["images"] == {"oct": f"oct/{record['eye_id']}.png", "cfp": f"cfp/{record['eye_id']}.png"}
    assert record["conversations"][0]["value"].startswith("<oct>\n<cfp>\n")
    facts = record["facts"]
    assert {"biomarkers", "missing", "quantities", "findings", "finding_evidence", "diagnoses", "systemic"} <= set(
        facts
    )
    assert set(facts["systemic"]) == {"age_years", "sex", "sbp_mmhg", "dbp_mmhg", "hba1c_mmol_mol", "bmi_kg_m2"}
    assert set(facts["finding_evidence"]) == set(facts["findings"])
    assert not set(facts["biomarkers"]) & set(facts["missing"])
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["image_root"] == str(table_path.parent.resolve())
    assert sum(summary.eyes.values()) == 80 and summary.records["test"] == {"report": summary.eyes["test"]}
    assert summary.agreement["eyes"] == 80


def test_same_seed_gives_byte_identical_output_and_another_seed_does_not(make_config, table_path, tmp_path):
    _run(make_config, table_path, tmp_path / "a")
    _run(make_config, table_path, tmp_path / "b")
    _run(make_config, table_path, tmp_path / "c", "seed=1")
    a, b, c = _bytes(tmp_path / "a"), _bytes(tmp_path / "b"), _bytes(tmp_path / "c")
    assert a == b
    assert a["train.jsonl"] != c["train.jsonl"]


def test_interrupted_run_resumes_to_identical_output(make_config, table_path, tmp_path, monkeypatch):
    _run(make_config, table_path, tmp_path / "whole", "checkpoint_every=7")
    original = RecordFactory.records
    calls = {"n": 0}

    def failing(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 25:
            raise RuntimeError("injected failure")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(RecordFactory, "records", failing)
    with pytest.raises(RuntimeError, match="injected failure"):
        _run(make_config, table_path, tmp_path / "resumed", "checkpoint_every=7")
    assert not (tmp_path / "resumed" / "train.jsonl").exists()  # nothing final before the run completes
    assert (tmp_path / "resumed" / ".generate_state.json").exists()
    monkeypatch.setattr(RecordFactory, "records", original)
    summary = _run(make_config, table_path, tmp_path / "resumed", "checkpoint_every=7")
    assert _bytes(tmp_path / "resumed") == _bytes(tmp_path / "whole")
    assert sum(summary.eyes.values()) == 80


def test_test_split_must_hold_one_report_per_eye(make_config, table_path, tmp_path):
    with pytest.raises(ValueError, match=r"mix.test.report"):
        _run(make_config, table_path, tmp_path / "x", "mix.test.report=2")


def test_generates_from_syntheye(make_config, syntheye_dir, tmp_path):
    summary = _run(make_config, syntheye_dir / "biomarkers.parquet", tmp_path / "out")
    records = _records(tmp_path / "out")
    first = records["test"][0] if records["test"] else records["train"][0]
    assert (syntheye_dir / first["images"]["oct"]).exists()
    assert summary.agreement["exact_match"] >= 0.8


def test_a_bad_table_stops_before_anything_is_written(make_config, table_path, tmp_path):
    _run(make_config, table_path, tmp_path / "out")
    before = _bytes(tmp_path / "out")
    bad = tmp_path / "bad" / "biomarkers.csv"
    bad.parent.mkdir()
    frame = pd.read_parquet(table_path)
    frame.loc[5, "macula_central_um"] = float("inf")
    frame.loc[7, "subject_id"] = None
    frame.to_csv(bad, index=False)
    with pytest.raises(TableValidationError) as error:
        _run(make_config, bad, tmp_path / "out", "check_images=false")
    message = str(error.value)
    assert f"{bad}, row 7, column 'macula_central_um': [non_finite] value inf is not finite" in message
    assert f"{bad}, row 9, column 'subject_id': [missing_value]" in message
    assert _bytes(tmp_path / "out") == before  # the earlier run's files are untouched, no partial or state file
    with pytest.raises(TableValidationError, match=r"image file .* does not exist"):
        _run(make_config, bad, tmp_path / "other")
    assert not (tmp_path / "other").exists()


def test_the_manifest_records_the_knowledge_base(make_config, table_path, tmp_path):
    from grok.knowledge.manifest import file_sha256, manifest_knowledge_base_version

    _run(make_config, table_path, tmp_path / "shipped")
    manifest = json.loads((tmp_path / "shipped" / "manifest.json").read_text())
    assert manifest["knowledge_base"] == {
        "name": "grok-kb-v1",
        "version": "v1",
        "path": None,
        "sha256": file_sha256(KB.path),
    }
    assert manifest_knowledge_base_version(tmp_path / "shipped") == "v1"
    own = tmp_path / "my_kb.yaml"
    own.write_bytes(Path(KB.path).read_bytes())
    _run(make_config, table_path, tmp_path / "own", f"knowledge_base.path={own}")
    record = json.loads((tmp_path / "own" / "manifest.json").read_text())["knowledge_base"]
    assert (record["version"], record["path"]) == (None, str(own.resolve()))
    assert manifest_knowledge_base_version(tmp_path / "own") is None


def test_report_record_for_row_is_the_record_stage_one_writes(make_config, table_path, tmp_path):
    from grok.knowledge.generate import report_record_for_row

    _run(make_config, table_path, tmp_path / "out")
    written = _records(tmp_path / "out")["test"]
    for expected in written[:3]:
        record, image_root = report_record_for_row(table_path, expected["eye_id"], KB)
        assert record == expected
        assert image_root == table_path.parent.resolve()
    with pytest.raises(ValueError, match="no row with eye id 'S999999_R'"):
        report_record_for_row(table_path, "S999999_R", KB)
    with pytest.raises(ValueError, match="give an eye id"):
        report_record_for_row(table_path, None, KB)
