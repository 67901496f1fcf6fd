"""Our own encoder export: weights as safetensors plus a JSON of constructor kwargs and transform settings."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from grok.models.encoders.checkpoints import LoadReport, load_state_into
from grok.models.encoders.vit import RetinaViT

EXPORT_FORMAT = "grok-retina-vit"
EXPORT_VERSION = 1


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
    config = json.loads(config_file.read_text(encoding="utf-8"))
    if config.get("format") != EXPORT_FORMAT or "architecture" not in config:
        raise ValueError(f"{config_file}: expected format {EXPORT_FORMAT!r} with an 'architecture' mapping")
    return config


def load_exported_encoder(path: str | Path, strict: bool = True) -> RetinaViT:
    """Rebuild an exported RetinaViT from `<path>.safetensors` + `<path>.json` (transform on `.transform_config`)."""
    path = Path(path).with_suffix(".safetensors")
    config = read_export_config(path)
    model = RetinaViT(**config["architecture"])
    if not path.is_file():
        raise FileNotFoundError(f"exported encoder weights not found: {path}")
    report = LoadReport(path=str(path), format="exported")
    load_state_into(model, load_file(str(path), device="cpu"), report, strict=strict)
    model.transform_config = dict(config.get("transform", {}))
    return model
