"""Locating the Hydra config tree and turning config functions into console entry points."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from functools import wraps
from pathlib import Path
from typing import Any

import hydra
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
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


# Keys (by their last part) whose default is a number or a bool but that Lightning also takes as text:
# devices=auto or devices=0,1; deterministic=warn.
TEXT_ALSO_ACCEPTED = frozenset({"devices", "deterministic"})
TYPE_NAMES = {bool: "a boolean (true or false)", int: "an integer", float: "a number"}


class RenamedKeyError(InputError):
    """A config key or override uses a name that was changed; the message names the new one."""


class ConfigValueError(InputError):
    """A command-line override gives a value of the wrong type; the message names the key, the value and the type."""


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


def _text_overrides(cfg: DictConfig, overrides: Iterable[str]) -> dict[str, tuple[str, str]]:
    """The overrides that set an existing value of `cfg` to text: {key: (the override, its value)}."""
    found: dict[str, tuple[str, str]] = {}
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        if not _may_be_mistyped(override):
            continue
        key, value = override.key_or_group, override.value()
        if key.split(".")[-1] in TEXT_ALSO_ACCEPTED or "${" in value:
            continue
        current = OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)
        if isinstance(current, str):  # a value, not a config group or a node
            found[key] = (override.input_line or f"{key}={value}", value)
    return found


def _may_be_mistyped(override: Override) -> bool:
    """Whether the override changes an existing key to one plain text value (not `+key`, `~key`, a sweep, null)."""
    if override.is_delete() or override.is_add() or override.is_sweep_override() or override.package is not None:
        return False
    return isinstance(override.value(), str)


def check_override_types(cfg: DictConfig, overrides: Iterable[str], config_name: str) -> None:
    """Refuse an override that gives text where the config's default is a bool, an integer or a number.

    The defaults come from composing the same config without those overrides (only when one of them sets text, so a
    run without text overrides pays nothing). An interpolation, null, a list or an int for a float are all accepted.
    """
    overrides = list(overrides)
    suspects = _text_overrides(cfg, overrides)
    if not suspects or not GlobalHydra.instance().is_initialized():  # e.g. a job a launcher runs in another process
        return
    kept = [o for o in overrides if o not in {line for line, _ in suspects.values()}]
    defaults = hydra.compose(config_name=config_name, overrides=kept)
    for key, (line, value) in suspects.items():
        default = OmegaConf.select(defaults, key, default=None, throw_on_resolution_failure=False)
        expected = type(default)
        if expected in TYPE_NAMES:
            raise ConfigValueError(
                f"override {line!r}: {key} expects {TYPE_NAMES[expected]} (its default is {default!r}), "
                f"got the text {value!r}"
            )


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
                hydra_cfg = HydraConfig.get()
                check_override_types(cfg, hydra_cfg.overrides.task, hydra_cfg.job.config_name or config_name)
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
