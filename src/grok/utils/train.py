"""The one training runner both stages use: datamodule -> model -> callbacks -> loggers -> trainer -> fit/test."""

from __future__ import annotations

import logging
from typing import Any

import hydra
import lightning as L
from omegaconf import DictConfig, OmegaConf

from grok.utils.instantiate import instantiate_callbacks, instantiate_loggers

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fit (and optionally test) the model described by `cfg`; return (metrics, objects).

    `cfg` holds `data`, `model`, `trainer`, `callbacks`, `logger` nodes plus `seed`, `train`, `test` and `ckpt_path`
    (resume from a checkpoint). The objects dict exposes what was built so callers can export artefacts.
    """
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)

    log.info("instantiating datamodule <%s>", cfg.data._target_)
    datamodule: L.LightningDataModule = hydra.utils.instantiate(cfg.data)
    log.info("instantiating model <%s>", cfg.model._target_)
    model: L.LightningModule = hydra.utils.instantiate(cfg.model)
    loggers = instantiate_loggers(cfg.get("logger"))
    callbacks = instantiate_callbacks(cfg.get("callbacks"), loggers)
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    hyperparameters = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    for logger in loggers:
        logger.log_hyperparams(hyperparameters)

    if cfg.get("train", True):
        ckpt_path = local_checkpoint_path(cfg.get("ckpt_path"))
        trainer.fit(model=model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    metrics = {key: _as_python(value) for key, value in trainer.callback_metrics.items()}

    if cfg.get("test", False):
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        trainer.test(model=model, datamodule=datamodule, ckpt_path=best or None, weights_only=True)
        metrics.update({key: _as_python(value) for key, value in trainer.callback_metrics.items()})

    return metrics, {"datamodule": datamodule, "model": model, "trainer": trainer, "loggers": loggers}


def _as_python(value: Any) -> Any:
    return value.item() if hasattr(value, "item") and getattr(value, "numel", lambda: 0)() == 1 else value


def local_checkpoint_path(path: str | None) -> str | None:
    """`ckpt_path` as given, refused when it is a URL (Lightning would fetch and unpickle it): download it and pass the
    local file."""
    if path is not None and "://" in str(path):
        raise ValueError(f"ckpt_path={path}: remote checkpoints are refused; download it and pass the local path")
    return path


def checkpoint_state_dict(path: str) -> dict:
    """The `state_dict` of a Lightning checkpoint, read with torch's safe loader (tensors and plain containers only:
    a checkpoint, or a path a checkpoint names, cannot run code)."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
