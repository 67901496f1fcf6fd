"""Visual projector: encoder token width -> language-model width (LLaVA's 2-layer MLP with GELU)."""

from __future__ import annotations

import itertools

from torch import Tensor, nn

INPUT_NORMS = (None, "batch", "position")


class TokenBatchNorm(nn.Module):
    """BatchNorm over every token of every image: standardises each feature of [..., dim] (running stats at eval)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(dim)

    def forward(self, tokens: Tensor) -> Tensor:
        """Standardise [..., dim] tokens feature by feature."""
        return self.norm(tokens.reshape(-1, tokens.shape[-1])).reshape(tokens.shape)


class TokenPositionNorm(nn.Module):
    """BatchNorm of each (token position, feature) pair of [n, num_tokens, dim] over the images of a batch.

    Removes what every image shares at a position (the position embedding's trace, the final norm's bias) and scales
    what differs between images to unit variance; running statistics at eval, no affine part (the projector follows).
    """

    def __init__(self, num_tokens: int, dim: int) -> None:
        super().__init__()
        self.num_tokens, self.dim = num_tokens, dim
        self.norm = nn.BatchNorm1d(num_tokens * dim, affine=False)

    def forward(self, tokens: Tensor) -> Tensor:
        """Standardise [n, num_tokens, dim] tokens position by position and feature by feature."""
        if tokens.shape[1:] != (self.num_tokens, self.dim):
            raise ValueError(
                f"input_norm=position was built for {self.num_tokens} tokens of width {self.dim} per image, "
                f"got {tuple(tokens.shape[1:])}: the encoder's image size or patch size changed"
            )
        flat = tokens.reshape(tokens.shape[0], -1)
        if self.training and tokens.shape[0] < 2:  # one image has no spread: use (without updating) running stats
            flat = nn.functional.batch_norm(flat, self.norm.running_mean, self.norm.running_var, eps=self.norm.eps)
            return flat.reshape(tokens.shape)
        return self.norm(flat).reshape(tokens.shape)


def build_input_norm(dim: int, kind: str | None, num_tokens: int | None = None) -> nn.Module:
    """The normalisation applied to an encoder's tokens before projection: none, `"batch"` (TokenBatchNorm: one
    mean/variance per feature over every token) or `"position"` (TokenPositionNorm: one per position and feature;
    needs `num_tokens`, the encoder's patch count).

    Frozen ViT tokens share a large image-independent component (position embeddings, the final norm's bias): on
    SynthEye the across-image spread is ~5% (aligned OCT) and ~1% (random CFP) of the token norm, so a projector at
    initialisation passes on nearly constant tokens. `"batch"` standardises each feature, but what differs between
    positions still dominates (85% of the CFP tokens' variance); `"position"` leaves only what differs between images.
    """
    if kind not in INPUT_NORMS:
        raise ValueError(f"fusion input_norm must be one of {INPUT_NORMS}, got {kind!r}")
    if kind == "position":
        if num_tokens is None:
            raise ValueError("fusion input_norm=position needs the encoder's token count (num_tokens)")
        return TokenPositionNorm(num_tokens, dim)
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
