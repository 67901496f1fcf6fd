"""Our own encoder export: weights as safetensors plus a JSON of constructor kwargs and transform settings."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from grok.models.encoders.checkpoints import (
    CheckpointMismatchError,
    LoadReport,
    load_state_into,
    read_safetensors,
    safetensors_metadata,
)
from grok.models.encoders.vit import RetinaViT
from grok.utils.errors import InputError
from grok.utils.json_files import read_json_file

EXPORT_FORMAT = "grok-retina-vit"
EXPORT_VERSION = 1


class EncoderExportError(InputError):
    """An exported encoder (its JSON config or weights) is malformed; the message names the file."""


def config_path_of(weights_path: str | Path) -> Path:
    """The JSON that sits next to an exported `*.safetensors` file."""
    return Path(weights_path).with_suffix(".json")


def export_encoder(
    model: RetinaViT, path: str | Path, transform: Mapping[str, Any] | None = None, metadata: Mapping | None = None
) -> Path:
    """Write `model` to `path` (.safetensors) and its config to the `.json` beside it; return the weights path."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"export path must end in .safetensors, got {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    save_file(state, str(path), metadata={"format": EXPORT_FORMAT})
    config = {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "class": f"{RetinaViT.__module__}.{RetinaViT.__qualname__}",
        "architecture": dict(model.architecture),
        "transform": dict(transform if transform is not None else model.transform_config),
        "embed_dim": model.embed_dim,
        "num_patches": model.num_patches,
        "metadata": dict(metadata or {}),
    }
    config_path_of(path).write_text(json.dumps(config, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def read_export_config(path: str | Path) -> dict[str, Any]:
    """The JSON config of an exported encoder (given the weights or the JSON path)."""
    config_file = config_path_of(path)
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file}: the JSON config of exported encoder {path} is missing")
    config = read_json_file(config_file, EncoderExportError, "the config grok-train-align wrote")
    if (
        not isinstance(config, dict)
        or config.get("format") != EXPORT_FORMAT
        or not isinstance(config.get("architecture"), dict)
    ):
        raise EncoderExportError(f"{config_file}: expected format {EXPORT_FORMAT!r} with an 'architecture' mapping")
    return config


def load_exported_encoder(path: str | Path, strict: bool = True) -> RetinaViT:
    """Rebuild an exported RetinaViT from `<path>.safetensors` + `<path>.json` (transform on `.transform_config`)."""
    path = Path(path).with_suffix(".safetensors")
    config = read_export_config(path)
    if not path.is_file() and not path.is_dir():
        raise FileNotFoundError(f"exported encoder weights not found: {path}")
    model = _build_model(config["architecture"], config_path_of(path))
    state = read_safetensors(path, what="exported encoder weights")
    if safetensors_metadata(path).get("format", EXPORT_FORMAT) != EXPORT_FORMAT:
        raise EncoderExportError(f"{path}: not a {EXPORT_FORMAT!r} export (its metadata names another format)")
    report = LoadReport(path=str(path), format="exported")
    load_state_into(model, state, report, strict=strict)
    model.transform_config = dict(config.get("transform", {}))
    return model


def _build_model(architecture: Mapping[str, Any], config_file: Path) -> RetinaViT:
    """The RetinaViT an export's `architecture` describes; keys it cannot take are named with the file."""
    try:
        return RetinaViT(**architecture)
    except (TypeError, ValueError, AssertionError) as error:
        raise CheckpointMismatchError(
            f"{config_file}: 'architecture' {dict(architecture)} does not build a RetinaViT ({error})"
        ) from error
