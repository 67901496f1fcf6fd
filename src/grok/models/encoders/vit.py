"""RetinaViT: the RETFound architecture as timm builds it, returning patch tokens and a pooled embedding."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

Pool = Literal["avg", "token"]


@dataclass
class EncoderOutput:
    """What an image encoder returns: `patch_tokens` [B, N, D] (no CLS/prefix tokens) and `pooled` [B, D]."""

    patch_tokens: Tensor
    pooled: Tensor


class RetinaViT(VisionTransformer):
    """A timm VisionTransformer whose state-dict keys match RETFound's, with an `encode` method for GROK.

    `pool="avg"` is RETFound's fine-tuning head: the mean of the patch tokens followed by a fresh `fc_norm` (the final
    token `norm` is then an identity, as in RETFound's `models_vit`). `pool="token"` takes the normalised CLS token
    (DINOv2 style). `init_values` enables layer scale (DINOv2 checkpoints carry `ls1`/`ls2`). The constructor keyword
    arguments are kept in `.architecture` so an export can rebuild the model exactly.
    """

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 1024,
        depth: int = 24,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        init_values: float | None = None,
        pool: Pool = "avg",
        layer_norm_eps: float = 1e-6,
        drop_path_rate: float = 0.0,
        num_classes: int = 0,
        dynamic_img_size: bool = False,
    ) -> None:
        if pool not in ("avg", "token"):
            raise ValueError(f"RetinaViT pool must be 'avg' (mean of patch tokens + fc_norm) or 'token', got {pool!r}")
        super().__init__(
            img_size=img_size,
            patch_size=patch_size,
            in_chans=in_chans,
            num_classes=num_classes,
            global_pool=pool,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            qkv_bias=qkv_bias,
            init_values=init_values,
            fc_norm=None,  # timm: fc_norm exactly when pooling by average
            drop_path_rate=drop_path_rate,
            dynamic_img_size=dynamic_img_size,
            norm_layer=partial(nn.LayerNorm, eps=layer_norm_eps),
        )
        self.architecture: dict[str, Any] = {
            "img_size": img_size,
            "patch_size": patch_size,
            "in_chans": in_chans,
            "embed_dim": embed_dim,
            "depth": depth,
            "num_heads": num_heads,
            "mlp_ratio": mlp_ratio,
            "qkv_bias": qkv_bias,
            "init_values": init_values,
            "pool": pool,
            "layer_norm_eps": layer_norm_eps,
            "drop_path_rate": drop_path_rate,
            "num_classes": num_classes,
            "dynamic_img_size": dynamic_img_size,
        }
        self.transform_config: dict[str, Any] = {}

    @property
    def num_patches(self) -> int:
        """Number of patch tokens for the configured input size."""
        return self.patch_embed.num_patches

    @property
    def image_size(self) -> int:
        """The configured square input size in pixels."""
        return int(self.patch_embed.img_size[0])

    def set_gradient_checkpointing(self, enable: bool = True) -> None:
        """Recompute block activations in the backward pass (timm's switch)."""
        self.set_grad_checkpointing(enable)

    def encode(self, images: Tensor) -> EncoderOutput:
        """Patch tokens [B, N, D] (after the final token norm, no prefix tokens) and the pooled embedding [B, D]."""
        tokens = self.forward_features(images)
        pooled = self.forward_head(tokens, pre_logits=True)
        return EncoderOutput(patch_tokens=tokens[:, self.num_prefix_tokens :], pooled=pooled)

    def block_index(self, parameter_name: str) -> int:
        """Depth of a parameter for layer-wise lr decay: 0 for embeddings, i+1 for block i, depth+1 for the rest."""
        if parameter_name.startswith(("cls_token", "pos_embed", "patch_embed", "reg_token")):
            return 0
        if parameter_name.startswith("blocks."):
            return int(parameter_name.split(".")[1]) + 1
        return len(self.blocks) + 1
