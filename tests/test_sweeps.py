"""Sweeps as a user runs them: one W&B run per multirun job, the Optuna searches, the SLURM and local launchers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from grok.utils.config import config_dir
from helpers import compose_config
from wandb_records import read_offline_run

# Two batches of one epoch on the tiny SynthEye data; no test split, no probe, no plots (seconds per job).
TINY_ALIGN = [
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=2",
    "data.batch_size=16",
    "test=false",
    "model.probe.enabled=false",
    "model.plots.enabled=false",
]
NOISE = ("Failed to load CPU gemm_4bit_forward", "💡 Tip", "anonymous setting has no effect", "LeafSpec")


def _grok_train_align(*overrides: str, root: Path) -> subprocess.CompletedProcess:
    """`grok-train-align <overrides>` in a fresh process (as a user runs it), paths under `root`."""
    env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    command = [sys.executable, "-m", "grok.cli.train_align", *overrides, f"paths.root_dir={root}"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def _sweep_dir(root: Path) -> Path:
    (sweep,) = (root / "logs" / "align" / "multiruns").iterdir()
    return sweep


def test_each_multirun_job_gets_its_own_offline_wandb_run(syntheye_dir: Path, tmp_path: Path) -> None:
    result = _grok_train_align(
        "-m",
        "loss=ntxent",
        "loss.temperature=0.1,0.5",
        "logger=[csv,wandb]",
        f"paths.syntheye_dir={syntheye_dir}",
        *TINY_ALIGN,
        root=tmp_path,
    )
    sweep = _sweep_dir(tmp_path)
    files = sorted(sweep.glob("*/wandb/offline-run-*/run-*.wandb"))
    runs = [read_offline_run(path) for path in files]
    assert [path.relative_to(sweep).parts[0] for path in files] == ["0", "1"]  # one run in each job's folder
    assert len({run.run_id for run in runs}) == 2
    assert [run.config["loss"]["temperature"] for run in runs] == [0.1, 0.5]
    assert {run.group for run in runs} == {str(sweep)}
    for run, temperature in zip(runs, ("0.1", "0.5"), strict=True):
        assert f"loss.temperature={temperature}" in run.name.split(",")
    assert "already in progress" not in result.stderr  # the second job did not reuse the first job's run
    assert not [noise for noise in NOISE if noise in result.stderr]
    assert result.stdout == ""  # log lines, progress bars and the model summary all go to stderr


def test_align_optuna_search_runs_the_trials_it_is_given(syntheye_dir: Path, tmp_path: Path) -> None:
    _grok_train_align(
        "-m",
        "hparams_search=align_optuna",
        "hydra.sweeper.n_trials=2",
        f"paths.syntheye_dir={syntheye_dir}",
        *TINY_ALIGN,
        root=tmp_path,
    )
    sweep = _sweep_dir(tmp_path)
    search = yaml.safe_load((config_dir() / "hparams_search" / "align_optuna.yaml").read_text())["hydra"]["sweeper"]
    trials = sorted(path for path in sweep.iterdir() if path.is_dir())
    assert [trial.name for trial in trials] == ["0", "1"]
    sampled = []
    for trial in trials:
        overrides = dict(
            line.split("=", 1) for line in yaml.safe_load((trial / ".hydra" / "overrides.yaml").read_text())
        )
        sampled.append({key: float(overrides[key]) for key in search["params"]})
        assert 0.02 <= sampled[-1]["loss.temperature"] <= 0.5 and 0.0 <= sampled[-1]["data.corruption_rate"] <= 0.5
        assert (trial / "export" / "oct_encoder.safetensors").is_file()  # each trial exports into its own folder
    assert sampled[0] != sampled[1]
    scores = [json.loads((t / "export" / "metrics.json").read_text())["val"]["recall_mean"] for t in trials]
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(max(scores))  # maximised: val/recall_mean, monitor_mode max
    assert best["best_params"] == pytest.approx(sampled[scores.index(max(scores))])
    assert not (tmp_path / "artifacts" / "align").exists()  # the stage-three input was left alone


def test_align_search_space_names_keys_of_the_align_config(tmp_path: Path) -> None:
    cfg = compose_config("align", tmp_path, ["hparams_search=align_optuna"])
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper") and cfg.hydra.sweeper.direction == "maximize"
    for key in cfg.hydra.sweeper.params:
        assert OmegaConf.select(cfg, key) is not None, key


def test_mllm_search_space_names_keys_of_the_mllm_config(tmp_path: Path) -> None:
    cfg = compose_config("mllm", tmp_path, ["hparams_search=mllm_optuna", "adaptation=lora"])
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper")
    assert cfg.hydra.sweeper.direction == {"max": "maximize", "min": "minimize"}[cfg.monitor_mode]
    for key in cfg.hydra.sweeper.params:
        assert OmegaConf.select(cfg, key) is not None, key


def test_slurm_launcher_composes_into_an_sbatch_script_for_ddp(tmp_path: Path, monkeypatch) -> None:
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    cfg = compose_config("align", tmp_path, ["hydra/launcher=slurm", "hardware=ddp", "hardware.num_nodes=2"])
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert params.pop("_target_").endswith("submitit_launcher.SlurmLauncher")
    # what the launcher does with its config before submitting (hydra_submitit_launcher.BaseSubmititLauncher.launch)
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 1))  # pretend srun exists
    executor = submitit.AutoExecutor(
        cluster="slurm", folder=params.pop("submitit_folder"), slurm_max_num_timeout=params.pop("max_num_timeout")
    )
    shared = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{key if key in shared else f"slurm_{key}": v for key, v in params.items()})
    script = executor._executor._make_submission_file_text("python -u -m submitit.core._submit", "0")
    for line in ("--nodes=2", "--gpus-per-node=4", "--ntasks-per-node=4", "--time=720"):
        assert f"#SBATCH {line}\n" in script
    assert cfg.trainer.devices == -1 and cfg.trainer.num_nodes == 2  # Lightning's DDP uses every GPU of each node


def test_local_launcher_composes_and_instantiates(tmp_path: Path) -> None:
    from hydra.utils import instantiate

    cfg = compose_config("align", tmp_path, ["hydra/launcher=local"])
    launcher = instantiate(cfg.hydra.launcher)
    assert type(launcher).__name__ == "JoblibLauncher" and cfg.hydra.launcher.n_jobs == 2
