"""Locating the Hydra config tree and turning config functions into console entry points."""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from grok.utils.resolvers import register_resolvers
from grok.utils.startup import as_job, quiet_start

CONFIG_ENV = "GROK_CONFIG_DIR"
register_resolvers()


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
    """Wrap `task(cfg)` as a console entry point running Hydra on `conf/<config_name>.yaml`.

    The entry point starts quietly (grok.utils.startup) and runs `task` as one job per run or sweep point.
    """

    def decorator(task: Callable[[DictConfig], Any]) -> Callable[[], Any]:
        @wraps(task)
        def main() -> Any:
            quiet_start()
            app = hydra.main(version_base="1.3", config_path=str(config_dir()), config_name=config_name)
            return app(as_job(task))()

        return main

    return decorator
