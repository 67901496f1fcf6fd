"""How much of the image encoder trains: full, the last N blocks, frozen, or LoRA (peft); layer-wise lr decay."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from torch import nn

from grok.models.encoders import RetinaViT

FINETUNE_MODES = ("full", "last_n", "frozen", "lora")


def apply_finetune_mode(encoder: RetinaViT, finetune: Mapping[str, Any]) -> RetinaViT:
    """Set `requires_grad` (or inject LoRA adapters) on `encoder` in place according to `finetune.mode`."""
    mode = finetune.get("mode", "full")
    if mode not in FINETUNE_MODES:
        raise ValueError(f"model.finetune.mode must be one of {FINETUNE_MODES}, got {mode!r}")
    if mode == "full":
        encoder.requires_grad_(True)
    elif mode == "frozen":
        encoder.requires_grad_(False)
    elif mode == "last_n":
        count = int(finetune.get("last_n_blocks", 1))
        if not 0 < count <= len(encoder.blocks):
            raise ValueError(f"model.finetune.last_n_blocks={count} must be in [1, {len(encoder.blocks)}]")
        encoder.requires_grad_(False)
        for module in [*encoder.blocks[-count:], encoder.norm, encoder.fc_norm]:
            module.requires_grad_(True)
    else:
        lora = dict(finetune.get("lora", {}))
        config = LoraConfig(
            r=int(lora.get("r", 8)),
            lora_alpha=int(lora.get("alpha", 16)),
            lora_dropout=float(lora.get("dropout", 0.0)),
            target_modules=lora.get("target_modules", r".*blocks\.\d+\.attn\.qkv"),
        )
        inject_adapter_in_model(config, encoder)
        if lora.get("train_norms", True):
            encoder.fc_norm.requires_grad_(True)
    return encoder


def merged_encoder(encoder: RetinaViT) -> RetinaViT:
    """A plain RetinaViT copy with any LoRA adapters merged into the base weights (the encoder itself is untouched)."""
    if not any(isinstance(module, LoraLayer) for module in encoder.modules()):
        return encoder
    merged = copy.deepcopy(encoder)
    for module in merged.modules():
        if isinstance(module, LoraLayer):
            module.merge()
    state = {
        key.replace(".base_layer.", "."): value for key, value in merged.state_dict().items() if ".lora_" not in key
    }
    plain = RetinaViT(**encoder.architecture)
    plain.load_state_dict(state, strict=True)
    plain.transform_config = dict(encoder.transform_config)
    return plain


def layer_decay_groups(
    named_parameters: Iterable[tuple[str, nn.Parameter]],
    encoder: RetinaViT,
    base_lr: float,
    layer_decay: float | None,
    prefix: str = "image_encoder.",
) -> list[dict[str, Any]]:
    """Parameter groups with per-group `lr` (encoder depth-scaled by `layer_decay` when set) and no weight decay on
    biases, norms, tokens, position embeddings and the logit scale."""
    depth = len(encoder.blocks) + 1
    groups: dict[tuple[float, bool], list[nn.Parameter]] = {}
    for name, parameter in named_parameters:
        if not parameter.requires_grad:
            continue
        scale = 1.0
        if layer_decay is not None and name.startswith(prefix):
            scale = layer_decay ** (depth - encoder.block_index(name.removeprefix(prefix)))
        no_decay = parameter.ndim <= 1 or name.endswith(("cls_token", "pos_embed", "mask_token", "log_logit_scale"))
        groups.setdefault((scale, no_decay), []).append(parameter)
    return [
        {"params": params, "lr": base_lr * scale, **({"weight_decay": 0.0} if no_decay else {})}
        for (scale, no_decay), params in sorted(groups.items(), key=lambda item: item[0])
    ]
