"""Test helpers importable from any test module (pytest puts tests/ on sys.path)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

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
