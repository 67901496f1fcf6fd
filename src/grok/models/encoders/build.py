"""Build an image encoder from the `encoder:` config group: architecture, optional checkpoint, transform settings."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch

from grok.models.encoders.checkpoints import load_checkpoint
from grok.models.encoders.exported import load_exported_encoder
from grok.models.encoders.vit import RetinaViT
from grok.utils.errors import InputError

log = logging.getLogger(__name__)


def build_encoder(
    architecture: Mapping[str, Any] | None = None,
    checkpoint: str | None = None,
    checkpoint_format: str = "retfound_mae",
    trust_pickle: bool = False,
    transform: Mapping[str, Any] | None = None,
    gradient_checkpointing: bool = False,
    name: str | None = None,
    init_seed: int | None = None,
) -> RetinaViT:
    """A RetinaViT with `architecture` kwargs, loaded from `checkpoint` when given (randomly initialised otherwise).

    `checkpoint_format="exported"` rebuilds the architecture from the export's JSON (then `architecture` may be null).
    `transform` (`family`, `image_size`) is kept on `.transform_config` so an export records how to preprocess.
    `init_seed` makes the random initialisation independent of whatever was built before (fair comparisons).
    """
    if checkpoint_format == "exported":
        if not checkpoint:
            raise InputError(f"encoder '{name}': checkpoint_format 'exported' needs encoder.checkpoint (.safetensors)")
        model = load_exported_encoder(checkpoint)
        if transform is not None and model.transform_config and dict(transform) != model.transform_config:
            raise InputError(
                f"encoder '{name}': encoder.transform {dict(transform)} differs from the export's "
                f"{model.transform_config} ({checkpoint}); the encoder must see images preprocessed as in training"
            )
    else:
        if architecture is None:
            raise InputError(f"encoder '{name}': encoder.architecture is required for format {checkpoint_format!r}")
        with torch.random.fork_rng(enabled=init_seed is not None):
            if init_seed is not None:
                torch.manual_seed(init_seed)
            model = RetinaViT(**dict(architecture))
        if checkpoint:
            load_checkpoint(model, checkpoint, checkpoint_format, trust_pickle=trust_pickle)
        else:
            log.info("encoder '%s': no checkpoint given, weights are randomly initialised", name)
    if transform is not None:
        model.transform_config = dict(transform)
    if gradient_checkpointing:
        model.set_gradient_checkpointing(True)
    return model
