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
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from grok.utils.config import config_dir


def compose_config(config_name: str, root: Path, overrides: Sequence[str] = ()) -> DictConfig:
    """Compose `conf/<config_name>.yaml` as Hydra would, with every path under `root`."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name, overrides=[f"paths.root_dir={root}", *overrides], return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(root / "run")
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    (root / "run").mkdir(parents=True, exist_ok=True)
    return cfg


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
