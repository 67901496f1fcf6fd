"""Check that `make demo` wrote what the README promises; exit status 1 with one line per missing or broken output.

    python tests/demo_outputs.py [Hydra overrides, as given to the demo: paths.root_dir=/tmp/grok-demo]
    make demo-check ARGS="paths.root_dir=/tmp/grok-demo"

Where each output lives is read from the stage configs (conf/), composed with the same overrides as the demo.
PROMISED is the one list of what is checked; the demo may write more (other predictions files, plots, logs).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from grok.utils.config import config_dir

MLLM_WEIGHTS, MLLM_CONFIG = "trainable.safetensors", "mllm_config.yaml"  # what grok-infer loads (grok.mllm.export)


@dataclass(frozen=True)
class Output:
    """One promised output: what it is, the stage config that places it, where, and how to check it."""

    what: str
    config: str
    locate: Callable[[DictConfig], Path]
    check: Callable[[Path, dict[str, DictConfig]], str | None]  # a problem, or None


def _nonempty_file(path: Path, _: dict[str, DictConfig]) -> str | None:
    return None if path.stat().st_size > 0 else "is empty"


def _test_predictions(path: Path, configs: dict[str, DictConfig]) -> str | None:
    """One report per test eye: the ids of the test split's `report` records, each with a non-empty prediction."""
    infer = configs["infer"]
    references = Path(infer.instructions_dir) / f"{infer.split}.jsonl"
    if not references.is_file():
        return f"cannot be checked: the {infer.split} split {references} is missing"
    expected = set()
    for line in references.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if not infer.tasks or record.get("task") in infer.tasks:
            expected.add(record["id"])
    written = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        record = json.loads(line)
        if not str(record.get("prediction") or "").strip():
            return f"line {number} (id {record.get('id')!r}) has no prediction"
        written[record["id"]] = record
    missing = sorted(expected - set(written))
    if missing:
        return f"has no report for {len(missing)} of the {len(expected)} {infer.split} eyes, e.g. {missing[:3]}"
    return None


def _results_table(path: Path, configs: dict[str, DictConfig]) -> str | None:
    model = configs["infer"].model_name
    header = next((line for line in path.read_text(encoding="utf-8").splitlines() if line.startswith("| Task")), "")
    columns = [cell.strip() for cell in header.strip("|").split("|")]
    return None if model in columns else f"has no '{model}' column (columns: {columns})"


def _metrics(path: Path, configs: dict[str, DictConfig]) -> str | None:
    model = configs["infer"].model_name
    models = json.loads(path.read_text(encoding="utf-8")).get("models", {})
    return None if model in models else f"has no '{model}' model (models: {sorted(models)})"


def _predictions(folder: str, model: str | None = None) -> Callable[[DictConfig], Path]:
    """Where grok-infer writes a model's predictions for the split (`folder`: predictions_dir or other_eye_dir)."""
    return lambda c: Path(c[folder]) / f"{model or c.model_name}_{c.split}.jsonl"


PROMISED: tuple[Output, ...] = (
    Output("reports for the test split (grok-infer)", "infer", _predictions("predictions_dir"), _test_predictions),
    Output(
        "pipeline baseline reports (grok-infer mode=rules)",
        "infer",
        _predictions("predictions_dir", "grok-rules"),
        _test_predictions,
    ),
    Output(
        "reports with another eye's images (grok-infer images_from=other_eye)",
        "infer",
        _predictions("other_eye_dir"),
        _test_predictions,
    ),
    Output("benchmark table (grok-eval)", "eval", lambda c: Path(c.output_dir) / "results.md", _results_table),
    Output("benchmark metrics (grok-eval)", "eval", lambda c: Path(c.output_dir) / "metrics.json", _metrics),
    Output(
        "aligned OCT encoder (stage two export)",
        "align",
        lambda c: Path(c.export.dir) / f"{c.export.name}.safetensors",
        _nonempty_file,
    ),
    Output("MLLM export: weights (stage three)", "mllm", lambda c: Path(c.export.dir) / MLLM_WEIGHTS, _nonempty_file),
    Output("MLLM export: config (stage three)", "mllm", lambda c: Path(c.export.dir) / MLLM_CONFIG, _nonempty_file),
)


def compose_stage_configs(overrides: Sequence[str]) -> dict[str, DictConfig]:
    """The top-level config of every stage PROMISED names, composed with `overrides`."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return {name: compose(name, overrides=list(overrides)) for name in sorted({o.config for o in PROMISED})}


def problems(overrides: Sequence[str] = ()) -> list[str]:
    """One line per promised output that is missing or fails its check (empty when the demo wrote them all)."""
    configs = compose_stage_configs(overrides)
    found = []
    for output in PROMISED:
        path = output.locate(configs[output.config])
        if not path.is_file():
            found.append(f"missing: {output.what}: {path}")
            continue
        try:
            problem = output.check(path, configs)
        except (OSError, ValueError, KeyError, TypeError) as error:  # unreadable or malformed JSON
            problem = f"cannot be read ({type(error).__name__}: {error})"
        if problem:
            found.append(f"broken: {output.what}: {path} {problem}")
    return found


def main(argv: Sequence[str] | None = None) -> int:
    """Print what is missing or broken and return 1, or print a one-line all-clear and return 0."""
    found = problems(sys.argv[1:] if argv is None else argv)
    if found:
        print(f"demo outputs: {len(found)} of {len(PROMISED)} promised outputs missing or broken", file=sys.stderr)
        for line in found:
            print(f"  {line}", file=sys.stderr)
        return 1
    print(f"demo outputs: all {len(PROMISED)} promised outputs present and well-formed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
