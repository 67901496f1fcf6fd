"""The one training runner both stages use: datamodule -> model -> callbacks -> loggers -> trainer -> fit/test.

Exact resume: every epoch's randomness is a function of (seed, epoch) (`EpochSeed` reseeds torch, numpy and
`random` at each epoch start; samplers and augmentation derive their own draws from the seed and the epoch), and the
checkpoint selection so far (best score, top-k) carries over into the resumed run's new folder (`KeepSelection`), so
a run resumed from `ckpt_path` (its `last.ckpt`) ends with the same weights and metrics as one never interrupted.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import hydra
import lightning as L
from omegaconf import DictConfig, OmegaConf

from grok.utils.errors import InputError
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
    callbacks.append(KeepSelection())
    if cfg.get("seed") is not None:
        callbacks.append(EpochSeed(int(cfg.seed)))
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


def derived_seed(*parts: Any) -> int:
    """A 63-bit seed that is a pure function of `parts` (e.g. seed, purpose, epoch, index): independent streams."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def seed_all(seed: int) -> None:
    """Seed torch (every device), numpy and `random` with `seed`."""
    import numpy as np
    import torch

    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


@contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Run the block on torch's CPU RNG seeded with `seed`, restoring the RNG's state after (None: leave it alone)."""
    if seed is None:
        yield
        return
    import torch

    with torch.random.fork_rng(devices=[]):
        # the CPU generator only: torch.manual_seed also queues a CUDA seeding with a formatted stack trace when CUDA
        # is not initialised, which per item cost alignment ~15% of its wall time
        torch.default_generator.manual_seed(seed)
        yield


class EpochSeed(L.Callback):
    """Reseed every RNG at the start of each training epoch from (seed, epoch, rank): what an epoch draws (dropout,
    augmentation, corruption) then depends on its number only, not on the epochs run before it in this process."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        seed_all(derived_seed(self.seed, "epoch", trainer.current_epoch, trainer.global_rank))


class KeepSelection(L.Callback):
    """On resume, keep what the checkpoint's ModelCheckpoint callbacks had selected (best score, top-k, last).

    Lightning drops it when the checkpoint folder changed, as it does for every resumed Hydra run (a new run folder):
    the resumed run would then take its first epoch as the best. Files of the earlier folder are never deleted
    (Lightning only removes checkpoints inside the current folder).
    """

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        states = checkpoint.get("callbacks", {})
        for callback in trainer.checkpoint_callbacks:
            state = states.get(callback.state_key)
            if state is not None and callback.dirpath and state.get("dirpath") != callback.dirpath:
                log.info(
                    "resuming: checkpoint selection from %s carries over to %s", state["dirpath"], callback.dirpath
                )
                state["dirpath"] = callback.dirpath


def _as_python(value: Any) -> Any:
    return value.item() if hasattr(value, "item") and getattr(value, "numel", lambda: 0)() == 1 else value


def local_checkpoint_path(path: str | None) -> str | None:
    """`ckpt_path` as given, refused when it is a URL (Lightning would fetch and unpickle it), and checked with the
    safe loader before Lightning reads it (a truncated or crafted file is named here, not deep in `fit`)."""
    if path is None:
        return None
    if "://" in str(path):
        raise InputError(f"ckpt_path={path}: remote checkpoints are refused; download it and pass the local path")
    checkpoint_state_dict(str(path))
    return path


def checkpoint_state_dict(path: str) -> dict:
    """The `state_dict` of a Lightning checkpoint, read with torch's safe loader (tensors and plain containers only:
    a checkpoint, or a path a checkpoint names, cannot run code); a bad file raises an InputError naming it."""
    from grok.models.encoders.checkpoints import CheckpointReadError, PickledCheckpointError, read_state_file

    try:
        checkpoint = read_state_file(path)
    except PickledCheckpointError as error:
        raise PickledCheckpointError(
            f"{path}: a Lightning checkpoint holding pickled Python objects is refused (GROK's checkpoints hold "
            "tensors and plain containers only; there is no opt-in)"
        ) from error
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise CheckpointReadError(f"{path}: not a Lightning checkpoint (expected a mapping with a 'state_dict')")
    return checkpoint["state_dict"]
