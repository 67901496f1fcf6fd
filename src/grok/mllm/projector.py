"""Visual projector: encoder token width -> language-model width (LLaVA's 2-layer MLP with GELU)."""

from __future__ import annotations

import itertools

from torch import Tensor, nn

INPUT_NORMS = (None, "batch")


class TokenBatchNorm(nn.Module):
    """BatchNorm over every token of every image: standardises each feature of [..., dim] (running stats at eval)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(dim)

    def forward(self, tokens: Tensor) -> Tensor:
        """Standardise [..., dim] tokens feature by feature."""
        return self.norm(tokens.reshape(-1, tokens.shape[-1])).reshape(tokens.shape)


def build_input_norm(dim: int, kind: str | None) -> nn.Module:
    """The normalisation applied to an encoder's tokens before projection: none, or `"batch"` (TokenBatchNorm).

    Frozen ViT tokens share a large image-independent component (position embeddings, the final norm's bias): on
    SynthEye the across-image spread is ~5% (aligned OCT) and ~1% (random CFP) of the token norm, so a projector at
    initialisation passes on nearly constant tokens. Standardising makes the image-dependent part dominant.
    """
    if kind not in INPUT_NORMS:
        raise ValueError(f"fusion input_norm must be one of {INPUT_NORMS}, got {kind!r}")
    return TokenBatchNorm(dim) if kind == "batch" else nn.Identity()


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
