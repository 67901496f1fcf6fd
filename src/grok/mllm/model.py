"""GrokMLLM: frozen OCT/CFP encoders -> fusion (projectors) -> visual tokens spliced into Qwen2 (LoRA or full)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from grok.mllm.chat import IGNORE_INDEX
from grok.mllm.splice import SplicedBatch, VisualInput, splice_visual_tokens
from grok.mllm.vocab_trim import VocabularyMap

MODALITIES = ("oct", "cfp")


class GrokMLLM(nn.Module):
    """The GROK multimodal language model.

    `language_model` is a Qwen2ForCausalLM (possibly wrapped by peft); `encoders` maps modality -> RetinaViT (or is
    missing a modality the model does not see); `fusion` maps the encoders' tokens to the language model's width;
    `placeholder_ids` maps modality -> real token id of its placeholder; `vocabulary` (optional) maps real Qwen2 ids
    to the rows of a trimmed embedding table. Everything outside this class speaks real Qwen2 token ids.
    """

    def __init__(
        self,
        language_model: nn.Module,
        encoders: Mapping[str, nn.Module],
        fusion: nn.Module,
        placeholder_ids: Mapping[str, int],
        vocabulary: VocabularyMap | None = None,
        freeze_encoders: bool = True,
        loss_chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        self.language_model = language_model
        self.encoders = nn.ModuleDict(dict(encoders))
        self.fusion = fusion
        self.placeholder_ids = dict(placeholder_ids)
        self.vocabulary = vocabulary
        self.freeze_encoders = freeze_encoders
        self.loss_chunk_size = loss_chunk_size
        if freeze_encoders:
            self.encoders.requires_grad_(False)
            self.encoders.eval()

    def train(self, mode: bool = True) -> GrokMLLM:
        """Train mode everywhere except frozen encoders (kept in eval: no dropout, fixed features)."""
        super().train(mode)
        if self.freeze_encoders:
            self.encoders.eval()
        return self

    @property
    def causal_lm(self) -> nn.Module:
        """The Qwen2ForCausalLM itself (peft injects LoRA layers in place, so they are used through it)."""
        return (
            self.language_model.get_base_model()
            if hasattr(self.language_model, "get_base_model")
            else self.language_model
        )

    def _compact(self, ids: Tensor) -> Tensor:
        return self.vocabulary.to_compact(ids) if self.vocabulary is not None else ids

    def encode_images(self, modality: str, pixels: Tensor) -> Tensor:
        """Patch tokens [n, N, D] of a modality's images (no gradient through frozen encoders)."""
        if modality not in self.encoders:
            raise ValueError(f"images of modality {modality!r} given but the model has no {modality} encoder")
        encoder = self.encoders[modality]
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_encoders):
            return encoder.encode(pixels).patch_tokens

    def visual_tokens(self, batch: Mapping[str, Any]) -> dict[int, VisualInput]:
        """Fused visual tokens of every image in `batch`, keyed by placeholder id (cached features if present)."""
        tokens: dict[str, Tensor | None] = {}
        owners: dict[str, Tensor] = {}
        for modality in MODALITIES:
            features, pixels = batch.get(f"{modality}_features"), batch.get(f"{modality}_pixels")
            if features is None and pixels is not None and pixels.shape[0]:
                features = self.encode_images(modality, pixels)
            tokens[modality] = features if features is not None and features.shape[0] else None
            owners[modality] = batch.get(f"{modality}_sample_index", torch.zeros(0, dtype=torch.long))
        pairs = (
            _pairs(owners["oct"], owners["cfp"]) if tokens["oct"] is not None and tokens["cfp"] is not None else None
        )
        fused_oct, fused_cfp = self.fusion(tokens["oct"], tokens["cfp"], pairs)
        visual = {}
        for modality, fused in zip(MODALITIES, (fused_oct, fused_cfp), strict=True):
            if fused is not None:
                visual[self.placeholder_ids[modality]] = VisualInput(fused, owners[modality].to(fused.device))
        return visual

    def prepare_inputs(self, batch: Mapping[str, Any], padding_side: str = "right") -> SplicedBatch:
        """Embed the text, splice the visual tokens in at the placeholders, re-pad on `padding_side`."""
        input_ids = batch["input_ids"]
        text_embeds = self.causal_lm.get_input_embeddings()(self._compact(input_ids))
        visual = self.visual_tokens(batch)
        return splice_visual_tokens(
            input_ids,
            text_embeds,
            batch["attention_mask"],
            visual,
            labels=batch.get("labels"),
            padding_side=padding_side,
            placeholder_ids=self.placeholder_ids.values(),
        )

    def forward(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """Mean next-token cross-entropy over supervised positions only (`loss`) and their count (`tokens`).

        Hidden states are gathered at the positions whose next token is supervised before the output head, so no
        full-vocabulary logits are formed for prompt or image tokens; `loss_chunk_size` bounds the logits further.
        """
        spliced = self.prepare_inputs(batch, padding_side="right")
        hidden = self.causal_lm.model(
            inputs_embeds=spliced.inputs_embeds,
            attention_mask=spliced.attention_mask,
            position_ids=spliced.position_ids,
            use_cache=False,
        ).last_hidden_state
        targets = spliced.labels[:, 1:]
        supervised = targets != IGNORE_INDEX
        selected = hidden[:, :-1][supervised]
        target_rows = self._compact(targets[supervised])
        return {"loss": self.supervised_loss(selected, target_rows), "tokens": supervised.sum()}

    def supervised_loss(self, hidden: Tensor, targets: Tensor) -> Tensor:
        """Cross-entropy of the output head on gathered hidden states, optionally in chunks of rows."""
        head = self.causal_lm.get_output_embeddings()
        if targets.numel() == 0:
            return hidden.sum() * 0.0
        chunk = self.loss_chunk_size or targets.numel()
        total = hidden.new_zeros((), dtype=torch.float32)
        for start in range(0, targets.numel(), chunk):
            logits = head(hidden[start : start + chunk]).float()
            total = total + F.cross_entropy(logits, targets[start : start + chunk], reduction="sum")
        return total / targets.numel()

    @torch.no_grad()
    def generate(
        self,
        batch: Mapping[str, Any],
        max_new_tokens: int = 256,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        eos_token_id: int | None = None,
        pad_token_id: int | None = None,
        **kwargs: Any,
    ) -> Tensor:
        """Generate continuations (real Qwen2 ids, [B, <=max_new_tokens], padded with `pad_token_id`).

        The prompt is left-padded after splicing and decoded with the KV cache by transformers' `generate`.
        """
        spliced = self.prepare_inputs(batch, padding_side="left")
        options: dict[str, Any] = {"do_sample": do_sample, "max_new_tokens": max_new_tokens, **kwargs}
        if do_sample:
            options.update(temperature=temperature, top_p=top_p)
        if eos_token_id is not None:
            options["eos_token_id"] = int(self._compact(torch.tensor(eos_token_id)))
        if pad_token_id is not None:
            options["pad_token_id"] = int(self._compact(torch.tensor(pad_token_id)))
        generated = self.causal_lm.generate(
            inputs_embeds=spliced.inputs_embeds, attention_mask=spliced.attention_mask, use_cache=True, **options
        )
        return self.vocabulary.to_real(generated) if self.vocabulary is not None else generated


def _pairs(oct_owner: Tensor, cfp_owner: Tensor) -> Tensor:
    """[n_pairs, 2] indices (OCT image, CFP image) of the k-th OCT and k-th CFP image of the same sample."""
    pairs: list[tuple[int, int]] = []
    for sample in torch.unique(torch.cat([oct_owner, cfp_owner])).tolist():
        oct_images = (oct_owner == sample).nonzero().flatten().tolist()
        cfp_images = (cfp_owner == sample).nonzero().flatten().tolist()
        pairs += list(zip(oct_images, cfp_images, strict=False))
    return torch.tensor(pairs, dtype=torch.long).reshape(-1, 2)
