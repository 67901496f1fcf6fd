"""Locating the Hydra config tree and turning config functions into console entry points."""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

CONFIG_ENV = "GROK_CONFIG_DIR"


def config_dir() -> Path:
    """The `conf/` tree: $GROK_CONFIG_DIR, else the copy inside an installed wheel, else the repository's."""
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV]).resolve()
    package_root = Path(__file__).resolve().parents[1]
    for candidate in (package_root / "conf", package_root.parents[1] / "conf"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"no GROK config tree found; set {CONFIG_ENV} to the folder that holds align.yaml")


def hydra_entry(config_name: str) -> Callable[[Callable[[DictConfig], Any]], Callable[[], Any]]:
    """Wrap `task(cfg)` as a console entry point running Hydra on `conf/<config_name>.yaml`."""

    def decorator(task: Callable[[DictConfig], Any]) -> Callable[[], Any]:
        @wraps(task)
        def main() -> Any:
            return hydra.main(version_base="1.3", config_path=str(config_dir()), config_name=config_name)(task)()

        return main

    return decorator
