"""Instantiate the groups that hold several objects (callbacks, loggers) from their config nodes."""

from __future__ import annotations

import logging

import hydra
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import DeviceStatsMonitor, LearningRateMonitor
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig

log = logging.getLogger(__name__)

# Callbacks that only write to a logger (Lightning refuses them on a Trainer without one).
NEEDS_LOGGER: tuple[type[Callback], ...] = (LearningRateMonitor, DeviceStatsMonitor)


def _instantiate_each(config: DictConfig | None, kind: str) -> list:
    objects: list = []
    if not config:
        return objects
    if not isinstance(config, DictConfig):
        raise TypeError(f"the '{kind}' config must be a mapping of name -> object config, got {type(config).__name__}")
    for name, node in config.items():
        if isinstance(node, DictConfig) and "_target_" in node:
            log.info("instantiating %s '%s' <%s>", kind, name, node._target_)
            objects.append(hydra.utils.instantiate(node))
    return objects


def instantiate_callbacks(config: DictConfig | None, loggers: list[Logger] | None = None) -> list[Callback]:
    """Every callback under `callbacks:` (a mapping of name -> `_target_` node).

    Without `loggers` (logger=none) the callbacks that only write to a logger are left out, so every callbacks
    option works with every logger option.
    """
    callbacks = _instantiate_each(config, "callbacks")
    if loggers:
        return callbacks
    for callback in callbacks:
        if isinstance(callback, NEEDS_LOGGER):
            log.info("no logger: leaving out the %s callback (it only writes to a logger)", type(callback).__name__)
    return [callback for callback in callbacks if not isinstance(callback, NEEDS_LOGGER)]


def instantiate_loggers(config: DictConfig | None) -> list[Logger]:
    """Every logger under `logger:` (a mapping of name -> `_target_` node)."""
    return _instantiate_each(config, "logger")
