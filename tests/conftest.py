"""Shared fixtures: offline environment, composed Hydra configs, a small SynthEye dataset built once."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from omegaconf import DictConfig

from helpers import compose_config


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., DictConfig]:
    """Compose a top-level config with paths under this test's tmp folder: make_config("align", ["k=v"])."""

    def _make(config_name: str, overrides: Sequence[str] = (), root: Path | None = None) -> DictConfig:
        return compose_config(config_name, root or tmp_path, overrides)

    return _make


@pytest.fixture(scope="session")
def syntheye_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small SynthEye dataset (the embedded default), generated once per test session."""
    from grok.data.synth import write_syntheye

    out = tmp_path_factory.mktemp("syntheye")
    write_syntheye(out, n_subjects=60, seed=7)
    return out
