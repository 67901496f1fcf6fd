"""Locating the Hydra config tree and turning config functions into console entry points."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from functools import wraps
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from grok.utils.errors import EXIT_BAD_INPUT, InputError, debug_requested, is_bad_input, one_line
from grok.utils.resolvers import register_resolvers
from grok.utils.startup import as_job, quiet_start

CONFIG_ENV = "GROK_CONFIG_DIR"
# Config keys that were renamed: old dotted key -> its replacement (a group, a node or a value).
RENAMED_KEYS = {
    "lora": "adaptation",
    "lora.enabled": "adaptation.mode (lora | qlora | full | frozen)",
    "lora.full_finetune": "adaptation.mode (lora | qlora | full | frozen)",
    "model.lora": "model.adaptation",
    "model.learning_rates.lora": "model.learning_rates.language_model",
    "torch_num_threads": "num_threads",
    "model.warmup_fraction": "model.warmup_ratio",
}


class RenamedKeyError(InputError):
    """A config key or override uses a name that was changed; the message names the new one."""


def _renamed(key: str) -> str | None:
    """The message for a renamed `key` (or a key below a renamed node), None for a current key."""
    matches = [old for old in RENAMED_KEYS if key == old or key.startswith(f"{old}.")]
    if not matches:
        return None
    old = max(matches, key=len)
    return f"config key '{key}' was renamed: use {RENAMED_KEYS[old]}{key[len(old) :]}"


def check_overrides(overrides: Iterable[str]) -> None:
    """Refuse command-line overrides (`key=value`, `+key=...`, `~key`) that use a renamed key, naming the new one."""
    for override in overrides:
        key = override.lstrip("+~").split("=", 1)[0].strip()
        message = _renamed(key)
        if message:
            raise RenamedKeyError(f"{message} (in the override {override!r})")


def check_config(cfg: DictConfig) -> None:
    """Refuse a composed config (e.g. from a user's experiment file) that still holds a renamed key."""
    for old in RENAMED_KEYS:
        if OmegaConf.select(cfg, old, default=None, throw_on_missing=False) is not None:
            raise RenamedKeyError(_renamed(old) or old)


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

    The entry point starts quietly (grok.utils.startup) and runs `task` as one job per run or sweep point. Bad input
    (`grok.utils.errors`) ends it with one line on stderr and exit status 2; other errors keep their traceback.
    """

    def decorator(task: Callable[[DictConfig], Any]) -> Callable[[], Any]:
        @wraps(task)
        def checked_task(cfg: DictConfig) -> Any:
            try:
                check_config(cfg)
                return task(cfg)
            except Exception as error:
                if debug_requested() or not is_bad_input(error):
                    raise
                report_bad_input(error)

        @wraps(task)
        def main() -> Any:
            try:
                check_overrides(sys.argv[1:])
            except RenamedKeyError as error:
                report_bad_input(error)
            quiet_start()
            app = hydra.main(version_base="1.3", config_path=str(config_dir()), config_name=config_name)
            return app(as_job(checked_task))()

        return main

    return decorator


def program_name() -> str:
    """The console command being run (e.g. `grok-infer`)."""
    return Path(sys.argv[0]).name or "grok"


def report_bad_input(error: BaseException) -> None:
    """Print `error` as one line on stderr and exit with status 2 (bad input)."""
    print(f"{program_name()}: error: {one_line(error)}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_BAD_INPUT) from None
