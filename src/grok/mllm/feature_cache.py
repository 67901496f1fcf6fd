"""Frozen-encoder features computed once, stored on disk, and reused across epochs and runs."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

log = logging.getLogger(__name__)


def encoder_fingerprint(encoder: nn.Module, transform: Mapping[str, Any]) -> str:
    """A short hash of an encoder's weights and its preprocessing (changes whenever either changes)."""
    digest = hashlib.sha256(json.dumps(dict(transform), sort_keys=True).encode())
    for name, tensor in encoder.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def _read_cache(cache_file: Path) -> dict[str, torch.Tensor]:
    """The stored features, or none when the file is missing or unreadable (a torn write is rebuilt, with a warning)."""
    if not cache_file.is_file():
        return {}
    try:
        return load_file(str(cache_file))
    except Exception as error:  # safetensors raises its own error types for truncated or corrupt files
        log.warning("feature cache %s is unreadable (%s): rebuilding it", cache_file, error)
        return {}


@torch.no_grad()
def cached_features(
    encode: Callable[[torch.Tensor], torch.Tensor],
    images: Mapping[str, Path],
    load_image: Callable[[str], torch.Tensor],
    cache_file: Path,
    batch_size: int = 32,
    description: str = "encoding images",
) -> dict[str, torch.Tensor]:
    """Features of every image key in `images`: read from `cache_file`, the missing ones encoded and added to it.

    `encode` maps a [B, 3, H, W] batch to [B, N, D] tokens; `load_image(key)` reads and preprocesses one image.
    The file is keyed by the image's relative path; name it by `encoder_fingerprint` so stale features are never used.
    """
    cache_file = Path(cache_file)
    stored = _read_cache(cache_file)
    missing = [key for key in images if key not in stored]
    if missing:
        for start in tqdm(range(0, len(missing), batch_size), desc=description, leave=False):
            keys = missing[start : start + batch_size]
            tokens = encode(torch.stack([load_image(key) for key in keys]))
            stored.update({key: value.cpu().contiguous() for key, value in zip(keys, tokens, strict=True)})
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        # one temporary file per process (DDP ranks fill the same cache at once), then an atomic rename: a killed
        # run never leaves a torn cache behind, and concurrent writers of the same content do not collide
        partial = cache_file.with_name(f"{cache_file.name}.{os.getpid()}.partial")
        save_file(stored, str(partial))
        os.replace(partial, cache_file)
        log.info("feature cache %s: encoded %d new image(s), %d stored", cache_file, len(missing), len(stored))
    return {key: stored[key] for key in images}
