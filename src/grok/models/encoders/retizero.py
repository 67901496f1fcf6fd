"""RetiZero's CFP image tower: a RETFound-CFP ViT-L/16 with rank-8 LoRA on q and v, merged into a plain RetinaViT.

RetiZero releases the whole CLIP model's state dict. Its vision tower sits under `vision_model.model.lora_vit.`;
each block's fused qkv is wrapped (`attn.qkv.qkv.{weight,bias}`) with LoRA factors `attn.qkv.linear_{a,b}_{q,v}`
added without scaling: q += B_q A_q x, v += B_v A_v x. The image feature is the CLS token after the final norm.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from grok.models.encoders.checkpoints import (
    CheckpointMismatchError,
    LoadReport,
    load_state_into,
    read_state_file,
)
from grok.models.encoders.vit import RetinaViT

log = logging.getLogger(__name__)

RETIZERO_PREFIX = "vision_model.model.lora_vit."
RETIZERO_ARCHITECTURE: dict[str, Any] = {
    "img_size": 224,
    "patch_size": 16,
    "embed_dim": 1024,
    "depth": 24,
    "num_heads": 16,
    "pool": "token",
}
_LORA_KEY = re.compile(r"^(blocks\.\d+\.attn)\.qkv\.(linear_[ab]_[qv])\.weight$")


class LoRAFusedQKV(nn.Module):
    """RetiZero's wrapper of a fused qkv Linear: rank-r LoRA on the q and v slices, no scaling."""

    def __init__(self, qkv: nn.Linear, rank: int = 8) -> None:
        super().__init__()
        dim = qkv.in_features
        self.qkv = qkv
        self.dim = dim
        self.linear_a_q = nn.Linear(dim, rank, bias=False)
        self.linear_b_q = nn.Linear(rank, dim, bias=False)
        self.linear_a_v = nn.Linear(dim, rank, bias=False)
        self.linear_b_v = nn.Linear(rank, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """Fused qkv projection plus the LoRA updates of q and v."""
        qkv = self.qkv(x)
        new_q = self.linear_b_q(self.linear_a_q(x))
        new_v = self.linear_b_v(self.linear_a_v(x))
        return torch.cat(
            [qkv[..., : self.dim] + new_q, qkv[..., self.dim : -self.dim], qkv[..., -self.dim :] + new_v], -1
        )


def add_retizero_lora(model: RetinaViT, rank: int = 8) -> RetinaViT:
    """Wrap every block's fused qkv in `LoRAFusedQKV` (in place): the unmerged layout of RetiZero's vision tower."""
    for block in model.blocks:
        block.attn.qkv = LoRAFusedQKV(block.attn.qkv, rank)
    return model


def merge_retizero_state(state: Mapping[str, Tensor], report: LoadReport) -> dict[str, Tensor]:
    """RetiZero CLIP state dict -> plain RetinaViT keys, LoRA factors merged into each fused qkv weight."""
    vision = {key[len(RETIZERO_PREFIX) :]: value for key, value in state.items() if key.startswith(RETIZERO_PREFIX)}
    if not vision:
        sample = ", ".join(list(state)[:5])
        raise CheckpointMismatchError(
            f"{report.path}: no keys under '{RETIZERO_PREFIX}' (expected RetiZero's whole CLIP state dict); "
            f"first keys: {sample}"
        )
    report.dropped += [key for key in state if not key.startswith(RETIZERO_PREFIX)]
    merged: dict[str, Tensor] = {}
    factors: dict[str, dict[str, Tensor]] = {}
    for key, value in vision.items():
        lora = _LORA_KEY.match(key)
        if lora:
            factors.setdefault(lora.group(1), {})[lora.group(2)] = value
        else:
            merged[key.replace(".attn.qkv.qkv.", ".attn.qkv.")] = value
    for attn, parts in factors.items():
        missing = {"linear_a_q", "linear_b_q", "linear_a_v", "linear_b_v"} - set(parts)
        if missing:
            raise CheckpointMismatchError(f"{report.path}: {attn} lacks LoRA factors {sorted(missing)}")
        weight_key = f"{attn}.qkv.weight"
        if weight_key not in merged:
            raise CheckpointMismatchError(f"{report.path}: LoRA factors for {attn} but no fused weight '{weight_key}'")
        weight = merged[weight_key].clone()
        dim = weight.shape[1]
        weight[:dim] += (parts["linear_b_q"].float() @ parts["linear_a_q"].float()).to(weight.dtype)
        weight[-dim:] += (parts["linear_b_v"].float() @ parts["linear_a_v"].float()).to(weight.dtype)
        merged[weight_key] = weight
    log.info("%s: merged LoRA (q, v) into %d fused qkv weights", report.path, len(factors))
    return merged


def load_retizero_checkpoint(model: RetinaViT, path: str | Path, trust_pickle: bool = False) -> LoadReport:
    """Load RetiZero's released state dict (optionally wrapped in `state_dict`/`model`) into `model`, LoRA merged."""
    report = LoadReport(path=str(path), format="retizero")
    raw = read_state_file(path, trust_pickle=trust_pickle)
    if isinstance(raw, Mapping):
        for wrapper in ("state_dict", "model"):
            if wrapper in raw and isinstance(raw[wrapper], Mapping):
                raw = raw[wrapper]
                break
    if not isinstance(raw, Mapping):
        raise CheckpointMismatchError(f"{path}: expected a state dict, found {type(raw).__name__}")
    return load_state_into(model, merge_retizero_state(raw, report), report)


def build_retizero_encoder(
    architecture: Mapping[str, Any] | None = None,
    checkpoint: str | None = None,
    trust_pickle: bool = False,
    transform: Mapping[str, Any] | None = None,
    gradient_checkpointing: bool = False,
) -> RetinaViT:
    """RetiZero's vision tower as a plain RetinaViT (CLS pooling); weights from `checkpoint` when given."""
    model = RetinaViT(**{**RETIZERO_ARCHITECTURE, **dict(architecture or {})})
    if checkpoint:
        load_retizero_checkpoint(model, checkpoint, trust_pickle=trust_pickle)
    else:
        log.info("RetiZero encoder: no checkpoint given, weights are randomly initialised")
    if transform is not None:
        model.transform_config = dict(transform)
    if gradient_checkpointing:
        model.set_gradient_checkpointing(True)
    return model
