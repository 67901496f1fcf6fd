"""The MLLM's image encoders: the aligned OCT encoder from stage two (or an un-aligned one for tests)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from grok.models.encoders import RetinaViT, build_encoder, load_exported_encoder
from grok.utils.errors import InputError

log = logging.getLogger(__name__)


class MissingAlignedEncoderError(FileNotFoundError):
    """The stage-two export the MLLM expects is absent."""


def build_oct_encoder(
    export_path: str | None,
    allow_unaligned: bool = False,
    architecture: Mapping[str, Any] | None = None,
    transform: Mapping[str, Any] | None = None,
) -> RetinaViT:
    """The aligned OCT encoder exported by `grok-train-align`, or (with `allow_unaligned`) a random RetinaViT.

    Without the export and without `allow_unaligned` this fails, telling the user to run `make train-align` or to set
    `model.oct_encoder.allow_unaligned=true` (an un-aligned random encoder, meant for tests and smoke runs).
    """
    if export_path and Path(export_path).with_suffix(".safetensors").is_file():
        encoder = load_exported_encoder(export_path)
        log.info("OCT encoder: aligned export %s", export_path)
        return encoder
    if not allow_unaligned:
        raise MissingAlignedEncoderError(
            f"aligned OCT encoder not found at {export_path} (model.oct_encoder.export_path). Run `make train-align` "
            "first, or set model.oct_encoder.allow_unaligned=true to use an un-aligned random encoder."
        )
    if architecture is None:
        raise InputError("model.oct_encoder.architecture is required when allow_unaligned=true and no export exists")
    log.warning("OCT encoder: no aligned export at %s, using an UN-ALIGNED random encoder", export_path)
    return build_encoder(architecture=architecture, transform=transform, name="oct (un-aligned)")


def transform_settings(encoder: RetinaViT, modality: str) -> dict[str, Any]:
    """`family` and `image_size` to preprocess images for `encoder` (its export's settings, else its input size)."""
    settings = dict(getattr(encoder, "transform_config", {}) or {})
    return {"family": settings.get("family", "tiny"), "image_size": int(settings.get("image_size", encoder.image_size))}
