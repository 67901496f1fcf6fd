"""Projection heads into the shared image/table embedding space."""

from __future__ import annotations

from torch import Tensor, nn


class ProjectionHead(nn.Module):
    """SimCLR-style head: Linear -> BatchNorm -> ReLU -> Linear (`hidden_dim=None`: a single Linear)."""

    def __init__(self, in_dim: int, out_dim: int = 128, hidden_dim: int | None = 256, batch_norm: bool = True) -> None:
        super().__init__()
        if hidden_dim is None:
            self.net: nn.Module = nn.Linear(in_dim, out_dim)
        else:
            norm: nn.Module = nn.BatchNorm1d(hidden_dim) if batch_norm else nn.LayerNorm(hidden_dim)
            self.net = nn.Sequential(nn.Linear(in_dim, hidden_dim), norm, nn.ReLU(), nn.Linear(hidden_dim, out_dim))
        self.out_dim = out_dim

    def forward(self, features: Tensor) -> Tensor:
        """Unnormalised projections [B, out_dim] (the loss normalises them)."""
        return self.net(features)
