"""What every console entry point does before and around its task: a quiet start, one tracker run per job.

A quiet start drops the messages that carry no action for the user, each named by the exact text it begins with
(never a blanket filter: a new warning still shows). Log lines go to stderr (conf/hydra/default.yaml), and so do the
prints of the modules in QUIET_IMPORT_PRINTS, so a command's stdout carries only its result.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import re
import sys
import warnings
from collections.abc import Callable, Sequence
from contextlib import redirect_stdout
from functools import cache, wraps
from types import ModuleType
from typing import Any

# Python warnings: (category, the message's beginning, why nobody can act on it).
QUIET_WARNINGS: tuple[tuple[type[Warning], str, str], ...] = (
    (
        FutureWarning,
        "`isinstance(treespec, LeafSpec)` is deprecated",
        "Lightning's own pytree helper on torch >= 2.10; nothing in GROK or its config uses LeafSpec",
    ),
    (
        FutureWarning,
        "`is_gradient_checkpointing` is deprecated and will be removed in v6",
        "peft reads the old name of transformers' property when it wraps the language model (LoRA, QLoRA)",
    ),
)

# Log records: (logger name, the message's beginning, why nobody can act on it).
QUIET_LOG_RECORDS: tuple[tuple[str, str, str], ...] = (
    (
        "bitsandbytes.backends.cpu.ops",
        "Failed to load CPU gemm_4bit_forward from kernels-community",
        "an optional CPU kernel of 4-bit layers from a hub; GROK never downloads kernels and QLoRA runs on a GPU",
    ),
    (
        "kernels._internals.hf_hub",
        "Skipping publisher trust check for 'kernels-community/quantization-bitsandbytes'",
        "the same optional CPU kernel, looked up offline (kernels >= 0.19) just before the record above",
    ),
    (
        "eyepy.io.HeVolReader",
        "The volume contains less layers than expected",
        "logged for every Heidelberg .vol (eyepy names 19 layer boundaries, the format holds 17); GROK reads B-scans",
    ),
    (
        "lightning.pytorch.utilities.rank_zero",
        "💡 Tip: For seamless cloud logging and experiment tracking",
        "an advertisement for Lightning's hosted LitLogger",
    ),
    (
        "lightning.pytorch.utilities.rank_zero",
        "💡 Tip: For seamless cloud uploads and versioning",
        "an advertisement for Lightning's hosted model registry",
    ),
)


# Modules that print to stdout as they are imported: (module, what it prints, why it belongs on stderr).
QUIET_IMPORT_PRINTS: tuple[tuple[str, str, str], ...] = (
    (
        "transformers.integrations.integration_utils",
        "[INFO] Running in WANDB offline mode",
        "printed whenever WANDB_MODE=offline (sentence-transformers imports it for the benchmark's MiniLM)",
    ),
)


class _DropMessages(logging.Filter):
    """Drops the records of one logger whose message begins with one of `beginnings`."""

    def __init__(self, beginnings: tuple[str, ...]) -> None:
        super().__init__()
        self.beginnings = beginnings

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.beginnings)


class _ImportPrintsToStderr(importlib.abc.MetaPathFinder):
    """Imports the named modules with their import-time prints sent to stderr instead of stdout."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = frozenset(names)

    def find_spec(self, fullname: str, path: Any, target: ModuleType | None = None) -> Any:
        if fullname not in self.names:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            execute = spec.loader.exec_module

            def exec_module(module: ModuleType) -> None:
                with redirect_stdout(sys.stderr):
                    execute(module)

            spec.loader.exec_module = exec_module  # this spec's own loader instance
        return spec


@cache
def quiet_start() -> None:
    """Install the filters of QUIET_WARNINGS, QUIET_LOG_RECORDS and QUIET_IMPORT_PRINTS (once; before the noisy
    libraries are imported)."""
    for category, beginning, _ in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=re.escape(beginning), category=category)
    by_logger: dict[str, tuple[str, ...]] = {}
    for name, beginning, _ in QUIET_LOG_RECORDS:
        by_logger[name] = (*by_logger.get(name, ()), beginning)
    for name, beginnings in by_logger.items():
        logging.getLogger(name).addFilter(_DropMessages(beginnings))
    if not any(isinstance(finder, _ImportPrintsToStderr) for finder in sys.meta_path):
        sys.meta_path.insert(0, _ImportPrintsToStderr([name for name, _, _ in QUIET_IMPORT_PRINTS]))


def finish_tracker_runs(exit_code: int) -> None:
    """Finish the W&B run this job opened, if any, so that the next job of a sweep starts a run of its own."""
    wandb = sys.modules.get("wandb")  # never imported unless a W&B logger was used
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=exit_code)


def as_job(task: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Wrap `task(cfg)` as one Hydra job: whether it returns or raises, its tracker runs are finished."""

    @wraps(task)
    def job(cfg: Any) -> Any:
        try:
            result = task(cfg)
        except BaseException:
            finish_tracker_runs(exit_code=1)
            raise
        finish_tracker_runs(exit_code=0)
        return result

    return job
