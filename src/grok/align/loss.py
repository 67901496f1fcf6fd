"""The contrastive objective for image/table alignment: `clip` (symmetric InfoNCE) or `ntxent` (SimCLR 2N-way).

Both L2-normalise their inputs. Under torch.distributed, features from every rank are all-gathered WITH gradients and
each rank computes the loss of its own rows only (open_clip's ClipLoss design); averaging the ranks' gradients, as DDP
does, then gives exactly the gradient of the single-process loss on the concatenated batch. Per-rank batches must have
equal size (train loaders drop the last incomplete batch).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
import torch.nn.functional as F
from torch import Tensor, nn

LossKind = Literal["clip", "ntxent"]


def gather_with_grad(features: Tensor) -> tuple[Tensor, int]:
    """All ranks' features concatenated (differentiable) and this rank's row offset; identity when not distributed."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return features, 0
    gathered = torch.cat(dist_fn.all_gather(features), dim=0)
    return gathered, dist.get_rank() * features.shape[0]


class ContrastiveLoss(nn.Module):
    """Image/table contrastive loss with a (learnable or fixed) temperature.

    `kind="clip"`: symmetric InfoNCE over the N x N cross-modal similarities, logit scale learnable from
    1/`temperature` and clamped to `max_logit_scale` (call `clamp_logit_scale_()` after each optimiser step).
    `kind="ntxent"`: each of the 2N projections is an anchor whose positive is its cross-modal pair and whose
    negatives are the other 2N-2 projections of BOTH modalities (SimCLR; Hager et al. 2023; GROK uses T=0.5).
    """

    def __init__(
        self,
        kind: LossKind = "clip",
        temperature: float = 0.07,
        learn_temperature: bool = True,
        max_logit_scale: float = 100.0,
        gather: bool = True,
    ) -> None:
        super().__init__()
        if kind not in ("clip", "ntxent"):
            raise ValueError(f"loss.kind must be 'clip' or 'ntxent', got {kind!r}")
        if temperature <= 0 or 1.0 / temperature > max_logit_scale:
            raise ValueError(f"loss.temperature={temperature} must be > 0 and >= 1/loss.max_logit_scale")
        self.kind = kind
        self.gather = gather
        self.max_log_scale = math.log(max_logit_scale)
        log_scale = torch.tensor(math.log(1.0 / temperature))
        if learn_temperature:
            self.log_logit_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_logit_scale", log_scale)

    @property
    def logit_scale(self) -> Tensor:
        """The current inverse temperature (clamped)."""
        return self.log_logit_scale.clamp(max=self.max_log_scale).exp()

    @torch.no_grad()
    def clamp_logit_scale_(self) -> None:
        """Keep the learnable scale within [1, max_logit_scale] (open_clip clamps after every step)."""
        self.log_logit_scale.clamp_(0.0, self.max_log_scale)

    def forward(self, image_embeddings: Tensor, table_embeddings: Tensor) -> Tensor:
        """Mean loss over this rank's rows; embeddings are [B, D] projections (normalised here)."""
        if image_embeddings.shape != table_embeddings.shape:
            raise ValueError(f"image {tuple(image_embeddings.shape)} and table {tuple(table_embeddings.shape)} differ")
        image = F.normalize(image_embeddings.float(), dim=-1)
        table = F.normalize(table_embeddings.float(), dim=-1)
        if self.gather:
            all_image, offset = gather_with_grad(image)
            all_table, _ = gather_with_grad(table)
        else:
            all_image, all_table, offset = image, table, 0
        targets = torch.arange(image.shape[0], device=image.device) + offset
        scale = self.logit_scale
        if self.kind == "clip":
            image_to_table = scale * image @ all_table.T
            table_to_image = scale * table @ all_image.T
            return (F.cross_entropy(image_to_table, targets) + F.cross_entropy(table_to_image, targets)) / 2
        return (
            self._ntxent_rows(image, all_table, all_image, targets, scale)
            + self._ntxent_rows(table, all_image, all_table, targets, scale)
        ) / 2

    @staticmethod
    def _ntxent_rows(anchors: Tensor, other: Tensor, same: Tensor, targets: Tensor, scale: Tensor) -> Tensor:
        """Anchors' cross-entropy over [other modality | same modality without itself]; the positive is `targets`."""
        cross = scale * anchors @ other.T
        within = scale * anchors @ same.T
        self_mask = F.one_hot(targets, num_classes=same.shape[0]).bool()
        within = within.masked_fill(self_mask, float("-inf"))
        return F.cross_entropy(torch.cat([cross, within], dim=1), targets)
