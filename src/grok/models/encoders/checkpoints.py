"""Loading checkpoints into RetinaViT: one key filter per source format, then one strict matching step.

Formats: `retfound_mae` (`{"model": state_dict}` of the whole MAE model), `retfound_dinov2` (`{"teacher": ...}` with a
`backbone.` prefix and DINO/iBOT heads), and `exported` (our safetensors, see `exported.py`). Every load returns a
`LoadReport` of what was dropped, resized or left at its initial value, and raises `CheckpointMismatchError` when the
checkpoint does not fit the architecture.
"""

from __future__ import annotations

import logging
import math
import pickle
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from timm.layers import resample_abs_pos_embed
from torch import Tensor, nn

from grok.models.encoders.vit import RetinaViT
from grok.utils.errors import InputError

log = logging.getLogger(__name__)

StateDict = dict[str, Tensor]


class CheckpointMismatchError(InputError):
    """The checkpoint's keys or shapes do not match the encoder architecture."""


class PickledCheckpointError(InputError):
    """A checkpoint needs full unpickling, which is refused unless the caller trusts the file."""


class CheckpointReadError(InputError):
    """A weights file cannot be read (truncated, corrupt, empty, not a weights file, a folder); names the path."""


@dataclass
class LoadReport:
    """What a checkpoint load did: keys dropped by the format filter, resized, missing or unexpected."""

    path: str
    format: str
    loaded: int = 0
    dropped: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    fresh: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line per category, keys abbreviated."""

        def short(keys: list[str]) -> str:
            return ", ".join(keys[:8]) + (f", ... (+{len(keys) - 8})" if len(keys) > 8 else "")

        lines = [f"{self.path} [{self.format}]: loaded {self.loaded} tensors"]
        for name in ("dropped", "resized", "fresh", "missing", "unexpected"):
            keys = getattr(self, name)
            if keys:
                lines.append(f"  {name} ({len(keys)}): {short(keys)}")
        return "\n".join(lines)


def _require_weights_file(path: Path, what: str) -> None:
    """Refuse a missing path or a folder where a weights file is expected."""
    if path.is_dir():
        raise CheckpointReadError(f"{path}: is a folder; expected a {what} file")
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")


def _detail(error: BaseException) -> str:
    """The informative line of a library error (torch's unpickler puts it deep in a long message)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    telling = [line for line in lines if "Unsupported" in line or "WeightsUnpickler error" in line]
    chosen = telling[-1] if telling else (lines[0] if lines else type(error).__name__)
    return chosen.split(" was not an allowed global")[0][:200]


def read_safetensors(path: str | Path, device: str = "cpu", what: str = "safetensors weights") -> dict[str, Tensor]:
    """Every tensor of a safetensors file; a truncated, corrupt or non-safetensors file raises CheckpointReadError."""
    path = Path(path)
    _require_weights_file(path, what)
    try:
        return load_file(str(path), device=device)
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise CheckpointReadError(
            f"{path}: not a readable safetensors file ({_detail(error)}); expected the complete {what} file "
            "(was it truncated or overwritten?)"
        ) from error


def safetensors_metadata(path: str | Path, what: str = "safetensors weights") -> dict[str, str]:
    """The string metadata of a safetensors file's header (empty when it has none)."""
    path = Path(path)
    _require_weights_file(path, what)
    try:
        with safe_open(str(path), "pt") as handle:
            return dict(handle.metadata() or {})
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise CheckpointReadError(f"{path}: not a readable safetensors file ({_detail(error)})") from error


def read_state_file(path: str | Path, trust_pickle: bool = False) -> dict:
    """Read a checkpoint file: safetensors directly, torch files with `weights_only=True` unless `trust_pickle`."""
    path = Path(path)
    _require_weights_file(path, "encoder checkpoint")
    if path.suffix == ".safetensors":
        return read_safetensors(path, what="encoder checkpoint")
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as error:
        if "Unsupported global" not in str(error):
            raise CheckpointReadError(
                f"{path}: not a torch checkpoint ({_detail(error)}); expected a file written by torch.save (a plain "
                "pickle you trust loads with encoder.trust_pickle=true)"
            ) from error
        raise PickledCheckpointError(
            f"{path}: refused to unpickle arbitrary Python objects (torch.load weights_only=True). If you trust this "
            f"file, set encoder.trust_pickle=true (trust_pickle=True). Detail: {_detail(error)}"
        ) from error
    except (EOFError, RuntimeError, ValueError, KeyError, OSError, pickle.PickleError) as error:
        raise CheckpointReadError(
            f"{path}: not a readable torch checkpoint ({type(error).__name__}: {_detail(error)}); expected a complete "
            "file written by torch.save (was it truncated?)"
        ) from error


def _require_key(raw: object, key: str, path: str, fmt: str) -> Mapping[str, Tensor]:
    if not isinstance(raw, Mapping) or key not in raw:
        found = list(raw)[:10] if isinstance(raw, Mapping) else type(raw).__name__
        raise CheckpointMismatchError(f"{path}: a {fmt} checkpoint is {{'{key}': state_dict}}; found {found}")
    return raw[key]


def filter_retfound_mae(raw: object, report: LoadReport) -> StateDict:
    """`{"model": ...}` of a RETFound MAE model: keep the encoder, drop the decoder and the mask token."""
    state = _require_key(raw, "model", report.path, report.format)
    kept: StateDict = {}
    for key, value in state.items():
        if key.startswith("decoder_") or key == "mask_token":
            report.dropped.append(key)
        else:
            kept[key] = value
    return kept


_CHUNKED_BLOCK = re.compile(r"^blocks\.\d+\.(\d+)\.")


def filter_retfound_dinov2(raw: object, report: LoadReport) -> StateDict:
    """`{"teacher": ...}` of a RETFound DINOv2 run: strip `backbone.`, drop the DINO/iBOT heads and the mask token."""
    state = _require_key(raw, "teacher", report.path, report.format)
    kept: StateDict = {}
    for key, value in state.items():
        if not key.startswith("backbone.") or key == "backbone.mask_token":
            report.dropped.append(key)
            continue
        name = _CHUNKED_BLOCK.sub(r"blocks.\1.", key.removeprefix("backbone."))  # block_chunks > 0 layout
        kept[name] = value
    return kept


def filter_plain(raw: object, report: LoadReport) -> StateDict:
    """A bare encoder state dict (our safetensors export)."""
    if not isinstance(raw, Mapping):
        raise CheckpointMismatchError(f"{report.path}: expected a state dict, found {type(raw).__name__}")
    return dict(raw)


FORMAT_FILTERS: dict[str, Callable[[object, LoadReport], StateDict]] = {
    "retfound_mae": filter_retfound_mae,
    "retfound_dinov2": filter_retfound_dinov2,
    "exported": filter_plain,
}


def _adapt_to_model(state: StateDict, model: RetinaViT, report: LoadReport) -> StateDict:
    """Drop a classifier that does not fit, drop the token norm unused under average pooling, resample pos_embed."""
    target = model.state_dict()
    for key in [k for k in state if k.startswith("head.")]:
        if key not in target or target[key].shape != state[key].shape:
            report.dropped.append(key)
            del state[key]
    if isinstance(model.norm, nn.Identity):  # avg pooling: RETFound fine-tuning discards the MAE's final norm
        for key in [k for k in state if k.startswith("norm.")]:
            report.dropped.append(key)
            del state[key]
    source_pos, target_pos = state.get("pos_embed"), target.get("pos_embed")
    if source_pos is not None and target_pos is not None and source_pos.shape[1] != target_pos.shape[1]:
        state["pos_embed"] = _resample_pos_embed(state["pos_embed"], model, report.path)
        report.resized.append("pos_embed")
    return state


def _resample_pos_embed(pos_embed: Tensor, model: RetinaViT, path: str) -> Tensor:
    prefix = 0 if model.no_embed_class else model.num_prefix_tokens
    old_patches = pos_embed.shape[1] - prefix
    side = math.isqrt(old_patches)
    if side * side != old_patches or pos_embed.shape[-1] != model.embed_dim:
        raise CheckpointMismatchError(
            f"{path}: pos_embed {tuple(pos_embed.shape)} cannot be resampled to the model's "
            f"{tuple(model.pos_embed.shape)} (expected a square grid of patches with width {model.embed_dim})"
        )
    resampled = resample_abs_pos_embed(
        pos_embed, new_size=list(model.patch_embed.grid_size), old_size=[side, side], num_prefix_tokens=prefix
    )
    log.info("%s: resampled pos_embed from %dx%d to %s patches", path, side, side, model.patch_embed.grid_size)
    return resampled


def load_state_into(model: RetinaViT, state: StateDict, report: LoadReport, strict: bool = True) -> LoadReport:
    """Match `state` against the model (fresh `fc_norm` allowed), raise on any other mismatch, then load it."""
    state = _adapt_to_model(dict(state), model, report)
    target = model.state_dict()
    fresh_allowed = {k for k in target if k.startswith("fc_norm.")}
    report.missing = [k for k in target if k not in state and k not in fresh_allowed]
    report.fresh = [k for k in target if k not in state and k in fresh_allowed]
    report.unexpected = [k for k in state if k not in target]
    wrong_shape = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(target[k].shape)}"
        for k in state
        if k in target and state[k].shape != target[k].shape
    ]
    if wrong_shape or (strict and (report.missing or report.unexpected)):
        counts = {"missing": report.missing, "unexpected": report.unexpected, "wrong shape": wrong_shape}
        found = ", ".join(f"{len(keys)} {name} (e.g. {keys[0]})" for name, keys in counts.items() if keys)
        headline = (
            f"{report.path}: checkpoint does not match the encoder architecture: {found} "
            "(check encoder.architecture against the checkpoint)"
        )
        shapes = "\n  wrong shape: " + "; ".join(wrong_shape[:8]) if wrong_shape else ""
        error = CheckpointMismatchError(f"{headline}\n{report.summary()}{shapes}")
        error.headline = headline
        raise error
    model.load_state_dict(state, strict=False)
    report.loaded = len(state)
    log.info("%s", report.summary())
    return report


def load_checkpoint(
    model: RetinaViT, path: str | Path, format: str, trust_pickle: bool = False, strict: bool = True
) -> LoadReport:
    """Load a checkpoint of the given format into `model` in place; return the report."""
    if format not in FORMAT_FILTERS:
        raise CheckpointMismatchError(
            f"{path}: unknown encoder checkpoint format {format!r}; expected one of {sorted(FORMAT_FILTERS)}"
        )
    report = LoadReport(path=str(path), format=format)
    raw = read_state_file(path, trust_pickle=trust_pickle)
    return load_state_into(model, FORMAT_FILTERS[format](raw, report), report, strict=strict)
