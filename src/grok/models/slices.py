"""OCT volumes: how many B-scans `data.oct_slices` reads, and the trainable slice aggregator (alignment, MLLM).

A volume's chosen slices are encoded one by one by the frozen ViT (tokens [n, S, N, D]). The ridge read-out fits on
every slice's tokens (what one B-scan cannot see, the superior and inferior subfields, is in the others); the
language model sees N tokens per volume, as for one image: `SliceAttentionPool` adds a learned embedding of each
slice's position and pools the S tokens at each patch position with attention (a learned query per head). The
alignment stage pools the slices' pooled embeddings the same way ([n, S, 1, D] -> [n, 1, D]).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from grok.data.io import SLICE_KEY, check_slice_spec


def slice_spec(spec: object, key: str = SLICE_KEY) -> str | int | tuple[int, ...] | None:
    """`data.oct_slices` checked and as plain Python (None: the record's OCT image is one image, not a volume)."""
    return None if spec is None else check_slice_spec(spec, key)


def slice_count(spec: object, key: str = SLICE_KEY) -> int | None:
    """The number of B-scans `spec` reads from each volume (`central`: 1, k: k, a list: its length); None for
    `spec=None` (the record's OCT image as one image, no volume). `all` is refused: the model needs a fixed count."""
    if spec is None:
        return None
    checked = check_slice_spec(spec, key)
    if checked == "all":
        raise ValueError(f"{key}=all: the slice aggregator needs a fixed number of slices (central, k or a list)")
    if checked == "central":
        return 1
    return checked if isinstance(checked, int) else len(checked)


class SliceAttentionPool(nn.Module):
    """[n, S, N, D] slice tokens -> [n, N, D]: slice position embedding, then attention pooling over the S slices at
    each patch position, one learned query per head (each head pools its D / heads channels with its own weights).

    At initialisation (zero queries, zero position embeddings) it is the mean over slices. [n, N, D] input (one image
    per eye) passes through unchanged.
    """

    def __init__(self, dim: int, num_slices: int, heads: int = 4) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"slice aggregator: heads={heads} must divide the encoder width {dim}")
        self.dim, self.num_slices, self.heads = dim, num_slices, heads
        self.position = nn.Parameter(torch.zeros(num_slices, dim))
        self.norm = nn.LayerNorm(dim)
        self.key = nn.Linear(dim, dim)
        self.query = nn.Parameter(torch.zeros(heads, dim // heads))

    def weights(self, tokens: Tensor) -> Tensor:
        """[n, S, N, heads] attention weights over the slices (sum to 1 over S)."""
        n, slices, patches, _ = tokens.shape
        keys = self.key(self.norm(tokens + self.position[:slices, None])).view(n, slices, patches, self.heads, -1)
        scores = (keys * self.query).sum(-1) / math.sqrt(self.dim // self.heads)
        return scores.softmax(dim=1)

    def forward(self, tokens: Tensor) -> Tensor:
        """Pool a volume's slice tokens into one image's worth of tokens."""
        if tokens.dim() == 3:
            return tokens
        n, slices, patches, dim = tokens.shape
        if slices != self.num_slices:
            raise ValueError(
                f"slice aggregator built for {self.num_slices} slice(s) per volume ({SLICE_KEY}), got {slices}"
            )
        values = (tokens + self.position[:slices, None]).view(n, slices, patches, self.heads, -1)
        pooled = (self.weights(tokens).unsqueeze(-1) * values).sum(dim=1)
        return pooled.reshape(n, patches, dim)
