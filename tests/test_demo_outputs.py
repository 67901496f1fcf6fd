"""The demo-output check CI runs after `make demo`: passes on a complete tree, names what is missing or broken."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from demo_outputs import PROMISED, main, problems


def _complete_demo_tree(root: Path) -> None:
    """The files `make demo` promises, as small stand-ins, under `root` (paths from the default configs)."""
    eyes = ["S000001_R", "S000001_L"]
    instructions = root / "data" / "instructions"
    instructions.mkdir(parents=True)
    records = [{"id": eye, "task": "report"} for eye in eyes] + [{"id": "S000001_R-dx", "task": "diagnosis"}]
    (instructions / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    artifacts = root / "artifacts"
    for folder in ("predictions", "benchmark", "align", "mllm"):
        (artifacts / folder).mkdir(parents=True)
    (artifacts / "predictions" / "other_eye").mkdir()
    for model, path in (
        ("grok", "grok_test.jsonl"),
        ("grok-rules", "grok-rules_test.jsonl"),
        ("grok", "other_eye/grok_test.jsonl"),
    ):
        predictions = [{"id": eye, "prediction": "Conclusion: Normal.", "model": model} for eye in eyes]
        (artifacts / "predictions" / path).write_text("".join(json.dumps(p) + "\n" for p in predictions))
    (artifacts / "benchmark" / "results.md").write_text(
        "# GOU benchmark\n\n| Task | Metric | grok | baseline_oracle |\n"
    )
    (artifacts / "benchmark" / "metrics.json").write_text(json.dumps({"models": {"grok": {}, "baseline_oracle": {}}}))
    (artifacts / "align" / "oct_encoder.safetensors").write_bytes(b"weights")
    (artifacts / "mllm" / "trainable.safetensors").write_bytes(b"weights")
    (artifacts / "mllm" / "mllm_config.yaml").write_text("model: {}\n")


def test_a_complete_demo_passes(tmp_path: Path, capsys) -> None:
    _complete_demo_tree(tmp_path)
    assert problems([f"paths.root_dir={tmp_path}"]) == []
    assert main([f"paths.root_dir={tmp_path}"]) == 0
    assert f"all {len(PROMISED)} promised outputs" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda a: (a / "predictions" / "grok_test.jsonl").unlink(), "missing: reports for the test split"),
        (lambda a: (a / "predictions" / "grok-rules_test.jsonl").unlink(), "missing: pipeline baseline reports"),
        (lambda a: (a / "predictions" / "other_eye" / "grok_test.jsonl").unlink(), "another eye's images"),
        (lambda a: (a / "mllm" / "trainable.safetensors").unlink(), "missing: MLLM export: weights"),
        (lambda a: (a / "align" / "oct_encoder.safetensors").write_bytes(b""), "aligned OCT encoder"),
        (lambda a: (a / "benchmark" / "metrics.json").write_text('{"models": {"x": {}}}'), "has no 'grok' model"),
        (lambda a: (a / "benchmark" / "results.md").write_text("| Task | Metric | x |\n"), "has no 'grok' column"),
        (lambda a: (a / "benchmark" / "metrics.json").write_text("{not json"), "cannot be read"),
        (
            lambda a: (a / "predictions" / "grok_test.jsonl").write_text('{"id": "S000001_R", "prediction": "x"}\n'),
            "has no report for 1 of the 2 test eyes",
        ),
    ],
)
def test_a_missing_or_broken_output_fails_naming_it(tmp_path: Path, capsys, damage, message: str) -> None:
    _complete_demo_tree(tmp_path)
    damage(tmp_path / "artifacts")
    found = problems([f"paths.root_dir={tmp_path}"])
    assert len(found) == 1 and message in found[0] and str(tmp_path) in found[0]
    assert main([f"paths.root_dir={tmp_path}"]) == 1
    assert message in capsys.readouterr().err
