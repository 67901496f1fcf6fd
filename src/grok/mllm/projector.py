"""Visual projector: encoder token width -> language-model width (LLaVA's 2-layer MLP with GELU)."""

from __future__ import annotations

import itertools

from torch import Tensor, nn


class MLPProjector(nn.Module):
    """`depth` linear layers with GELU between them, mapping [..., in_dim] -> [..., out_dim]."""

    def __init__(self, in_dim: int, out_dim: int, depth: int = 2, hidden_dim: int | None = None) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"projector depth must be >= 1, got {depth}")
        hidden_dim = hidden_dim or out_dim
        widths = [in_dim] + [hidden_dim] * (depth - 1) + [out_dim]
        layers: list[nn.Module] = []
        for index, (width_in, width_out) in enumerate(itertools.pairwise(widths)):
            if index:
                layers.append(nn.GELU())
            layers.append(nn.Linear(width_in, width_out))
        self.layers = nn.Sequential(*layers)
        self.in_dim, self.out_dim = in_dim, out_dim

    def forward(self, tokens: Tensor) -> Tensor:
        """Project visual tokens to the language model's width."""
        return self.layers(tokens)
