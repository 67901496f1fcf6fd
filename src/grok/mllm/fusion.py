"""Fusion of OCT and CFP visual tokens into language-model-width token sequences (three configurable designs).

Every fusion takes the encoders' tokens of all images in a batch, `oct_tokens` [n_oct, N, D_oct] and `cfp_tokens`
[n_cfp, M, D_cfp] (either may be None), plus `pairs` [n_pairs, 2] (indices of an OCT and a CFP image of the same
eye, for designs that mix the two), and returns the two sequences at the language model's width; each sequence is
spliced at its own placeholder, so a conversation `<oct>\\n<cfp>` receives the concatenation OCT tokens + CFP tokens.
Every design takes `input_norm` (None, "batch" or "position", see `grok.mllm.projector.build_input_norm`), applied
to each modality's encoder tokens before anything else, and the encoders' token counts `oct_tokens` / `cfp_tokens`
(needed by "position"; None for a modality the model does not see).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from grok.mllm.projector import MLPProjector, build_input_norm

FusedTokens = tuple[Tensor | None, Tensor | None]


def _input_norms(kind: str | None, *modalities: tuple[int, int | None]) -> list[nn.Module]:
    """One input norm per (width, token count) modality; a modality without encoder (no token count) gets none."""
    return [
        nn.Identity() if kind == "position" and tokens is None else build_input_norm(dim, kind, tokens)
        for dim, tokens in modalities
    ]


class PaperFusion(nn.Module):
    """The GROK paper's design: CFP -> CFP projector; OCT -> its own MLP (D_oct -> D_cfp) -> the CFP projector."""

    def __init__(
        self,
        oct_dim: int,
        cfp_dim: int,
        llm_dim: int,
        projector_depth: int = 2,
        input_norm: str | None = None,
        oct_tokens: int | None = None,
        cfp_tokens: int | None = None,
    ) -> None:
        super().__init__()
        self.oct_norm, self.cfp_norm = _input_norms(input_norm, (oct_dim, oct_tokens), (cfp_dim, cfp_tokens))
        self.oct_adapter = MLPProjector(oct_dim, cfp_dim, depth=projector_depth)
        self.cfp_projector = MLPProjector(cfp_dim, llm_dim, depth=projector_depth)

    def forward(self, oct_tokens: Tensor | None, cfp_tokens: Tensor | None, pairs: Tensor | None = None) -> FusedTokens:
        """Project each modality; the OCT path shares the CFP projector after its adapter."""
        oct_out = self.cfp_projector(self.oct_adapter(self.oct_norm(oct_tokens))) if oct_tokens is not None else None
        cfp_out = self.cfp_projector(self.cfp_norm(cfp_tokens)) if cfp_tokens is not None else None
        return oct_out, cfp_out


class ConcatModalityFusion(nn.Module):
    """One projector per modality plus a learned modality embedding added to every token of that modality."""

    def __init__(
        self,
        oct_dim: int,
        cfp_dim: int,
        llm_dim: int,
        projector_depth: int = 2,
        input_norm: str | None = None,
        oct_tokens: int | None = None,
        cfp_tokens: int | None = None,
    ) -> None:
        super().__init__()
        self.oct_norm, self.cfp_norm = _input_norms(input_norm, (oct_dim, oct_tokens), (cfp_dim, cfp_tokens))
        self.oct_projector = MLPProjector(oct_dim, llm_dim, depth=projector_depth)
        self.cfp_projector = MLPProjector(cfp_dim, llm_dim, depth=projector_depth)
        self.modality_embedding = nn.Parameter(torch.randn(2, llm_dim) * 0.02)

    def forward(self, oct_tokens: Tensor | None, cfp_tokens: Tensor | None, pairs: Tensor | None = None) -> FusedTokens:
        """Project each modality and tag it with its modality embedding."""
        embedding = self.modality_embedding
        oct_out = self.oct_projector(self.oct_norm(oct_tokens)) + embedding[0] if oct_tokens is not None else None
        cfp_out = self.cfp_projector(self.cfp_norm(cfp_tokens)) + embedding[1] if cfp_tokens is not None else None
        return oct_out, cfp_out


class CrossAttentionFusion(ConcatModalityFusion):
    """Concat-with-modality-embeddings, then each paired image's tokens attend to the other modality's tokens.

    The cross-attention residuals are gated by tanh(gate) with the gates initialised at 0 (Flamingo-style), so
    training starts from the concatenation design; unpaired images pass through unchanged.
    """

    def __init__(
        self,
        oct_dim: int,
        cfp_dim: int,
        llm_dim: int,
        projector_depth: int = 2,
        num_heads: int = 4,
        input_norm: str | None = None,
        oct_tokens: int | None = None,
        cfp_tokens: int | None = None,
    ) -> None:
        super().__init__(oct_dim, cfp_dim, llm_dim, projector_depth, input_norm, oct_tokens, cfp_tokens)
        self.oct_from_cfp = nn.MultiheadAttention(llm_dim, num_heads, batch_first=True)
        self.cfp_from_oct = nn.MultiheadAttention(llm_dim, num_heads, batch_first=True)
        self.norm_oct = nn.LayerNorm(llm_dim)
        self.norm_cfp = nn.LayerNorm(llm_dim)
        self.gates = nn.Parameter(torch.zeros(2))

    def forward(self, oct_tokens: Tensor | None, cfp_tokens: Tensor | None, pairs: Tensor | None = None) -> FusedTokens:
        """Project, tag, then exchange information between the OCT and CFP image of each pair."""
        oct_out, cfp_out = super().forward(oct_tokens, cfp_tokens)
        if oct_out is None or cfp_out is None or pairs is None or pairs.numel() == 0:
            return oct_out, cfp_out
        oct_index, cfp_index = pairs[:, 0], pairs[:, 1]
        oct_query, cfp_query = self.norm_oct(oct_out[oct_index]), self.norm_cfp(cfp_out[cfp_index])
        oct_update, _ = self.oct_from_cfp(oct_query, cfp_query, cfp_query, need_weights=False)
        cfp_update, _ = self.cfp_from_oct(cfp_query, oct_query, oct_query, need_weights=False)
        gates = torch.tanh(self.gates)
        oct_out = oct_out.index_add(0, oct_index, gates[0] * oct_update)
        cfp_out = cfp_out.index_add(0, cfp_index, gates[1] * cfp_update)
        return oct_out, cfp_out
