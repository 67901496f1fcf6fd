"""Kill -9 and resume, per stage: the real console command is killed mid-run, the run is resumed (through the function
the command calls), and the result equals an uninterrupted run's (metrics, weights, or the bytes of the output)."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from safetensors.torch import load_file

import grok.mllm.generate as generation
from grok.cli.generate import run_generate
from grok.cli.infer import run as infer
from grok.cli.train_align import run_align
from grok.cli.train_mllm import run as train_mllm
from grok.knowledge.generate import RecordFactory
from mllm_helpers import tiny_overrides, write_instruction_fixture

BIN = Path(sys.executable).parent


class Killed:
    """A console command started in the background and SIGKILLed as soon as `ready()` holds."""

    def __init__(self, command: str, args: Sequence[str], ready: Callable[[], bool], folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.command, self.stderr = command, folder / f"{command}.stderr"
        with self.stderr.open("wb") as stderr:
            self.process = subprocess.Popen(
                [str(BIN / command), *args, f"hydra.run.dir={folder / 'run'}"],
                cwd=folder,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        self.thread = threading.Thread(target=self._watch, args=(ready,), daemon=True)
        self.thread.start()

    def _watch(self, ready: Callable[[], bool]) -> None:
        while self.process.poll() is None:
            if ready():
                self.process.send_signal(signal.SIGKILL)
                return
            time.sleep(0.01)

    def wait(self, timeout: float = 300.0) -> None:
        """Wait for the kill; fail when the command ended by itself (nothing was interrupted)."""
        self.thread.join(timeout)
        code = self.process.wait(timeout)
        tail = self.stderr.read_text(errors="replace")[-2000:]
        assert code == -signal.SIGKILL, f"{self.command} was not killed mid-run (exit {code}):\n{tail}"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _counting(monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> dict[str, int]:
    """Count the calls of `owner.name` (patched for this test)."""
    calls, original = {"n": 0}, getattr(owner, name)

    def counted(*args, **kwargs):
        calls["n"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


# ---------------------------------------------------------------------------------------------------- stage two
def test_align_killed_and_resumed_ends_with_the_uninterrupted_metrics(make_config, syntheye_dir, tmp_path) -> None:
    args = [
        f"paths.syntheye_dir={syntheye_dir}",
        "data.batch_size=16",
        "trainer.max_epochs=2",
        "+trainer.limit_train_batches=2",
        "logger=none",
        "model.plots.enabled=false",
        "model.probe.enabled=false",
        "num_threads=1",
    ]
    folder = tmp_path / "killed"
    last = folder / "run" / "checkpoints" / "last.ckpt"  # written after epoch 0
    killed = Killed("grok-train-align", [*args, f"paths.root_dir={folder}"], last.is_file, folder)
    run_align(make_config("align", args, root=tmp_path / "whole"))
    killed.wait()
    assert not (folder / "artifacts" / "align" / "metrics.json").exists()
    run_align(make_config("align", [*args, f"ckpt_path={last}"], root=tmp_path / "resumed"))

    whole, resumed = (tmp_path / run / "artifacts" / "align" for run in ("whole", "resumed"))
    reports = [json.loads((d / "metrics.json").read_text()) for d in (whole, resumed)]
    assert reports[0]["test"]["recall_mean"] is not None
    assert {k: reports[0][k] for k in ("val", "test")} == {k: reports[1][k] for k in ("val", "test")}
    weights = [load_file(d / "oct_encoder.safetensors") for d in (whole, resumed)]
    assert weights[0].keys() == weights[1].keys()
    assert all(weights[0][key].equal(weights[1][key]) for key in weights[0])


# ---------------------------------------------------------------------------------------------------- stage three
MLLM_WEIGHTS = ("trainable.safetensors", "fusion.safetensors", "language_model/model.safetensors")


@pytest.fixture(scope="module")
def instructions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_instruction_fixture(tmp_path_factory.mktemp("resume_instructions"))


@pytest.fixture(scope="module")
def mllm_runs(instructions: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Export folders of an uninterrupted tiny MLLM run and of one killed after epoch 0 and resumed."""
    from helpers import compose_config

    root = tmp_path_factory.mktemp("resume_mllm")
    args = tiny_overrides(
        instructions,
        [
            "adaptation=full",
            "trainer.max_epochs=2",
            "model.clinical_validation.enabled=false",
            "monitor=val/loss",
            "monitor_mode=min",
            "logger=none",
            "num_threads=1",
        ],
    )
    folder = root / "killed"
    last = folder / "run" / "checkpoints" / "last.ckpt"
    killed = Killed("grok-train-mllm", [*args, f"paths.root_dir={folder}"], last.is_file, folder)
    train_mllm(compose_config("mllm", root / "whole", args))
    killed.wait()
    assert not (folder / "artifacts" / "mllm" / "trainable.safetensors").exists()
    train_mllm(compose_config("mllm", root / "resumed", [*args, f"ckpt_path={last}"]))
    return {run: root / run / "artifacts" / "mllm" for run in ("whole", "resumed")}


def test_mllm_killed_and_resumed_exports_the_uninterrupted_weights(mllm_runs) -> None:
    for name in MLLM_WEIGHTS:
        assert _sha256(mllm_runs["resumed"] / name) == _sha256(mllm_runs["whole"] / name), name


def test_infer_killed_and_rerun_continues_to_the_same_bytes(
    make_config, mllm_runs, instructions, tmp_path, monkeypatch
) -> None:
    args = [
        f"model_dir={mllm_runs['whole']}",
        f"instructions_dir={instructions}",
        "generation.max_new_tokens=32",
        "generation.do_sample=true",  # batch n samples from (seed, n): a resumed run draws what the whole run drew
        "generation.temperature=3.0",  # the tiny model is peaked: flatten it so that draws differ
        "batch_size=1",
        "progress=false",
        "num_threads=1",
    ]
    output = tmp_path / "killed" / "grok_test.jsonl"
    partial = output.with_name(output.name + ".partial")
    killed = Killed(
        "grok-infer",
        [*args, f"output={output}"],
        lambda: partial.is_file() and partial.stat().st_size > 0,
        output.parent,
    )
    killed.wait()
    assert not output.exists()
    done = partial.read_bytes().count(b"\n")  # whole lines = whole batches (batch_size=1)
    assert done >= 1

    batches = _counting(monkeypatch, generation, "generate_batch")
    assert infer(make_config("infer", [*args, f"output={output}"])) == output
    assert batches["n"] == 8 - done and not partial.exists()
    whole = infer(make_config("infer", [*args, f"output={tmp_path / 'whole.jsonl'}"]))
    assert _sha256(output) == _sha256(whole)
    assert len({json.loads(line)["prediction"] for line in output.read_text().splitlines()}) > 1  # sampled

    infer(make_config("infer", [*args, f"output={output}"]))  # finished and up to date: kept as it is
    assert batches["n"] == 8 - done + 8


# ---------------------------------------------------------------------------------------------------- stage one
def test_generate_killed_and_rerun_reuses_its_partial_files(make_config, syntheye_dir, tmp_path, monkeypatch) -> None:
    args = [f"input_table={syntheye_dir / 'biomarkers.parquet'}", "progress=false", "checkpoint_every=4"]
    output = tmp_path / "killed" / "instructions"
    state = output / ".generate_state.json"
    Killed("grok-generate", [*args, f"output_dir={output}"], state.is_file, output.parent).wait()
    assert not (output / "train.jsonl").exists() and (output / "train.jsonl.partial").exists()
    rows_done = json.loads(state.read_text())["rows_done"]
    assert rows_done >= 4

    records = _counting(monkeypatch, RecordFactory, "records")
    summary = run_generate(make_config("generate", [*args, f"output_dir={output}"]))
    rows = sum(summary.eyes.values())
    assert records["n"] == rows - rows_done  # the rows before the last checkpoint came from the partial files
    run_generate(make_config("generate", [*args, f"output_dir={tmp_path / 'whole'}"]))
    files = sorted(p.name for p in (tmp_path / "whole").iterdir())
    assert files == sorted(p.name for p in output.iterdir()) and "train.jsonl" in files
    assert all(_sha256(output / name) == _sha256(tmp_path / "whole" / name) for name in files)
