"""The entry points' start: the exact messages filtered (and nothing else), logs off stdout, every callbacks option
working with every logger option."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
from lightning.pytorch.callbacks import LearningRateMonitor

from grok.utils.instantiate import instantiate_callbacks, instantiate_loggers
from grok.utils.progress import StderrProgressBar
from grok.utils.startup import QUIET_LOG_RECORDS, QUIET_WARNINGS, _ImportPrintsToStderr, as_job, quiet_start
from grok.utils.train import train
from test_bench import fixture_references, write_instructions


@pytest.mark.parametrize(("name", "beginning"), [(name, beginning) for name, beginning, _ in QUIET_LOG_RECORDS])
def test_each_quiet_log_message_is_dropped_and_its_neighbours_kept(name: str, beginning: str, caplog) -> None:
    quiet_start()
    with caplog.at_level(logging.INFO, logger=name):
        logging.getLogger(name).warning("%s: and the rest of the message", beginning)
        logging.getLogger(name).warning("another message of the same library")
    assert [record.getMessage() for record in caplog.records] == ["another message of the same library"]


@pytest.mark.parametrize(
    ("category", "beginning"), [(category, beginning) for category, beginning, _ in QUIET_WARNINGS]
)
def test_each_quiet_warning_is_ignored_and_others_still_shown(category: type[Warning], beginning: str) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_start.cache_clear()
        quiet_start()  # installs its filters in front of "always"
        warnings.warn(f"{beginning} and the rest of the message", category, stacklevel=1)
        warnings.warn("some other deprecation", category, stacklevel=1)
    quiet_start.cache_clear()  # catch_warnings dropped the filters again: let the next call reinstall them
    assert [str(w.message) for w in caught] == ["some other deprecation"]


def test_import_time_prints_of_named_modules_go_to_stderr(tmp_path: Path, monkeypatch, capsys) -> None:
    (tmp_path / "chatty_module.py").write_text('print("[INFO] imported")\nVALUE = 1\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "meta_path", [_ImportPrintsToStderr(["chatty_module"]), *sys.meta_path])
    monkeypatch.delitem(sys.modules, "chatty_module", raising=False)
    import chatty_module

    captured = capsys.readouterr()
    assert chatty_module.VALUE == 1 and captured.out == "" and captured.err == "[INFO] imported\n"


def test_progress_bars_write_to_stderr(capsys) -> None:
    bar = StderrProgressBar()
    bar._trainer = SimpleNamespace(state=SimpleNamespace(fn="fit"))  # the validation bar asks which loop runs
    makers = (bar.init_sanity_tqdm, bar.init_train_tqdm, bar.init_validation_tqdm, bar.init_test_tqdm)
    for make in (*makers, bar.init_predict_tqdm):
        progress = make()
        progress.total = 2
        progress.update(2)
        progress.close()
    captured = capsys.readouterr()
    assert captured.out == "" and "2/2" in captured.err


def test_callbacks_that_need_a_logger_are_left_out_under_logger_none(make_config: Callable) -> None:
    cfg = make_config("align", ["logger=csv"])
    with_logger = instantiate_callbacks(cfg.callbacks, instantiate_loggers(cfg.logger))
    without = instantiate_callbacks(cfg.callbacks, [])
    assert any(isinstance(c, LearningRateMonitor) for c in with_logger)
    assert [type(c) for c in without] == [type(c) for c in with_logger if not isinstance(c, LearningRateMonitor)]


def test_default_callbacks_train_with_logger_none(make_config: Callable, syntheye_dir: Path) -> None:
    cfg = make_config(
        "align",
        [f"paths.syntheye_dir={syntheye_dir}", "+trainer.fast_dev_run=true", "logger=none", "callbacks=default"],
    )
    # before: Lightning's "Cannot use LearningRateMonitor callback with Trainer that has no logger"
    metrics, objects = train(cfg)
    assert "train/loss" in metrics and objects["trainer"].checkpoint_callback is not None


def test_grok_eval_prints_only_its_table_on_stdout_and_no_warning(tmp_path: Path) -> None:
    references = fixture_references()
    reference_path = write_instructions(tmp_path / "test.jsonl", references)
    predictions = tmp_path / "artifacts" / "predictions" / "grok_test.jsonl"
    predictions.parent.mkdir(parents=True)
    predictions.write_text("".join(f'{{"id": "{r.id}", "prediction": "{r.id}."}}\n' for r in references))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "offline"}
    # the MiniLM embedding imports sentence-transformers, which prints "[INFO] Running in WANDB offline mode"
    overrides = [f"paths.root_dir={tmp_path}", f"reference_path={reference_path}", "meteor=false"]
    result = subprocess.run(
        [sys.executable, "-m", "grok.cli.evaluate", *overrides, "bootstrap.resamples=20"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table = (tmp_path / "artifacts" / "benchmark" / "results.md").read_text(encoding="utf-8")
    assert result.stdout == table + "\n"
    assert "[grok.bench" in result.stderr  # its log lines went to stderr
    assert [line for line in result.stderr.splitlines() if "warn" in line.lower()] == []


@pytest.mark.parametrize(("outcome", "exit_code"), [("returns", 0), ("raises", 1)])
def test_a_job_finishes_its_wandb_run_whether_it_returns_or_raises(monkeypatch, outcome: str, exit_code: int) -> None:
    finished = []
    fake_wandb = SimpleNamespace(run=object(), finish=lambda exit_code: finished.append(exit_code))
    monkeypatch.setitem(sys.modules, "wandb", fake_wandb)

    def task(cfg: dict) -> str:
        if outcome == "raises":
            raise RuntimeError("diverged")
        return "metric"

    job = as_job(task)
    if outcome == "raises":
        with pytest.raises(RuntimeError, match="diverged"):
            job({})
    else:
        assert job({}) == "metric"
    assert finished == [exit_code]


def test_a_job_without_a_wandb_run_finishes_nothing(monkeypatch) -> None:
    finished = []
    monkeypatch.setitem(sys.modules, "wandb", SimpleNamespace(run=None, finish=lambda exit_code: finished.append(1)))
    assert as_job(lambda cfg: 0.5)({}) == 0.5 and finished == []
