"""GrokMLLM: frozen OCT/CFP encoders -> fusion (projectors) -> visual tokens spliced into Qwen2 (LoRA or full)."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from grok.grounding.model import QuantityGrounding, ResolvedQuantities
from grok.mllm.chat import IGNORE_INDEX
from grok.mllm.splice import SplicedBatch, VisualInput, splice_visual_tokens
from grok.mllm.vocab_trim import VocabularyMap

MODALITIES = ("oct", "cfp")


@dataclass
class PreparedInputs:
    """The spliced language-model inputs, the values in force (grounding) and each modality's fused tokens."""

    spliced: SplicedBatch
    quantities: ResolvedQuantities | None
    fused: dict[str, tuple[Tensor, Tensor]]


@dataclass
class GenerationOutput:
    """Generated real token ids and the values they were generated with (None without grounding)."""

    ids: Tensor
    quantities: ResolvedQuantities | None


class GrokMLLM(nn.Module):
    """The GROK multimodal language model.

    `language_model` is a Qwen2ForCausalLM (possibly wrapped by peft); `encoders` maps modality -> RetinaViT (or is
    missing a modality the model does not see); `fusion` maps the encoders' tokens to the language model's width;
    `placeholder_ids` maps modality -> real token id of its placeholder; `vocabulary` (optional) maps real Qwen2 ids
    to the rows of a trimmed embedding table; `grounding` (optional) embeds the values of quantity tokens and reads
    quantities out of the images (grok.grounding.model); `slice_aggregator` (optional, grok.models.slices) pools an
    OCT volume's slice tokens [n, S, N, D] into one image's N tokens before fusion (the ridge read-out reads every
    slice). Everything outside this class speaks real token ids.
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
        grounding: QuantityGrounding | None = None,
        slice_aggregator: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.language_model = language_model
        self.encoders = nn.ModuleDict(dict(encoders))
        self.fusion = fusion
        self.placeholder_ids = dict(placeholder_ids)
        self.vocabulary = vocabulary
        self.freeze_encoders = freeze_encoders
        self.loss_chunk_size = loss_chunk_size
        self.grounding = grounding
        self.slice_aggregator = slice_aggregator
        if grounding is not None:  # new tokens (generation) get their values through the input embedding
            self.causal_lm.get_input_embeddings().register_forward_hook(grounding.embedding_hook)
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
        """Patch tokens [n, N, D] of a modality's images [n, 3, H, W], or [n, S, N, D] of volumes [n, S, 3, H, W]
        (each slice encoded alone); no gradient through frozen encoders."""
        if modality not in self.encoders:
            raise ValueError(f"images of modality {modality!r} given but the model has no {modality} encoder")
        encoder = self.encoders[modality]
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_encoders):
            if pixels.dim() == 5:
                tokens = encoder.encode(pixels.flatten(0, 1)).patch_tokens
                return tokens.view(*pixels.shape[:2], *tokens.shape[1:])
            return encoder.encode(pixels).patch_tokens

    def encoder_tokens(self, batch: Mapping[str, Any]) -> dict[str, tuple[Tensor | None, Tensor]]:
        """Frozen-encoder tokens of every image in `batch` per modality (cached features, or encoded from pixels):
        (tokens [n, N, D] or None, owner sample [n])."""
        encoded: dict[str, tuple[Tensor | None, Tensor]] = {}
        for modality in MODALITIES:
            features, pixels = batch.get(f"{modality}_features"), batch.get(f"{modality}_pixels")
            if features is None and pixels is not None and pixels.shape[0]:
                features = self.encode_images(modality, pixels)
            owners = batch.get(f"{modality}_sample_index", torch.zeros(0, dtype=torch.long))
            encoded[modality] = (features if features is not None and features.shape[0] else None, owners)
        return encoded

    def readout_estimates(self, batch: Mapping[str, Any]) -> Tensor:
        """[B, K] the read-out's estimates of a batch (grounded models only)."""
        encoded = self.encoder_tokens(batch)
        fused = self.fused_tokens(batch, encoded)
        ids = batch["input_ids"]
        return self.grounding.estimate(fused, ids.shape[0], ids.device, encoded=encoded)

    def fused_tokens(
        self, batch: Mapping[str, Any], encoded: Mapping[str, tuple[Tensor | None, Tensor]] | None = None
    ) -> dict[str, tuple[Tensor, Tensor]]:
        """Fused visual tokens of every image in `batch` per modality: (tokens [n, N, H], owner sample [n]); an OCT
        volume's slices are pooled by the slice aggregator first."""
        encoded = encoded if encoded is not None else self.encoder_tokens(batch)
        tokens = {modality: encoded[modality][0] for modality in MODALITIES}
        if tokens["oct"] is not None and tokens["oct"].dim() == 4:
            if self.slice_aggregator is None:
                raise ValueError("OCT volumes given ([n, S, N, D] tokens) but the model has no slice aggregator")
            tokens["oct"] = self.slice_aggregator(tokens["oct"])
        owners = {modality: encoded[modality][1] for modality in MODALITIES}
        pairs = (
            _pairs(owners["oct"], owners["cfp"]) if tokens["oct"] is not None and tokens["cfp"] is not None else None
        )
        fused_oct, fused_cfp = self.fusion(tokens["oct"], tokens["cfp"], pairs)
        return {
            modality: (fused, owners[modality].to(fused.device))
            for modality, fused in zip(MODALITIES, (fused_oct, fused_cfp), strict=True)
            if fused is not None
        }

    def prepare_inputs(
        self, batch: Mapping[str, Any], padding_side: str = "right", source: str | None = None
    ) -> PreparedInputs:
        """Embed the text (quantity tokens with their values), splice each image's visual tokens (then, with
        grounding, the quantity tokens of what it measures) in at its placeholder, re-pad on `padding_side`.

        `source=None` uses the batch's value tables as they are (training); a grounding source (`auto`, `input`,
        `readout`) resolves them with the read-out head's estimates first (inference).
        """
        input_ids = batch["input_ids"]
        encoded = self.encoder_tokens(batch)
        fused = self.fused_tokens(batch, encoded)
        quantities = None
        if self.grounding is not None:
            estimates = None
            if source is not None:
                estimates = self.grounding.estimate(fused, input_ids.shape[0], input_ids.device, encoded=encoded)
            quantities = self.grounding.resolve(batch, estimates, source)
        embedding = self.causal_lm.get_input_embeddings()
        rows = self._compact(input_ids)
        if quantities is not None:
            with self.grounding.values_in_context(quantities):
                text_embeds = embedding(rows)
        else:
            text_embeds = embedding(rows)
        visual = {}
        for modality, (tokens, owners) in fused.items():
            if quantities is not None:
                preamble = self.grounding.preamble_tokens(modality, owners, quantities, embedding)
                tokens = tokens if preamble is None else torch.cat([tokens, preamble.to(tokens.dtype)], dim=1)
            visual[self.placeholder_ids[modality]] = VisualInput(tokens, owners)
        spliced = splice_visual_tokens(
            input_ids,
            text_embeds,
            batch["attention_mask"],
            visual,
            labels=batch.get("labels"),
            padding_side=padding_side,
            placeholder_ids=self.placeholder_ids.values(),
        )
        return PreparedInputs(spliced, quantities, fused)

    def forward(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """Mean next-token cross-entropy over supervised positions only (`lm_loss`) and their count (`tokens`);
        with grounding, plus the read-out head's weighted regression loss (`readout_loss`): `loss` is the sum.

        Hidden states are gathered at the positions whose next token is supervised before the output head, so no
        full-vocabulary logits are formed for prompt or image tokens; `loss_chunk_size` bounds the logits further.
        """
        prepared = self.prepare_inputs(batch, padding_side="right")
        spliced = prepared.spliced
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
        weights = None
        if self.grounding is not None:
            weights = self.grounding.judgement_weights(self._compact(targets.clamp(min=0)))
        lm_loss = self.supervised_loss(selected, target_rows, None if weights is None else weights[supervised])
        outputs = {"loss": lm_loss, "lm_loss": lm_loss, "tokens": supervised.sum()}
        if self.grounding is not None:
            truth = batch.get("readout_values", batch["quantity_values"])  # the eye's own (counterfactuals differ)
            readout = self.grounding.readout_loss(prepared.fused, truth.float())
            outputs["readout_loss"] = readout
            outputs["loss"] = lm_loss + self.grounding.readout_loss_weight * readout
            targets = batch.get("judgement_targets")
            judged = None if targets is None else self.grounding.judgement_loss(prepared.quantities, targets)
            if judged is not None:
                outputs["judgement_loss"] = judged
                outputs["loss"] = outputs["loss"] + self.grounding.judgement_loss_weight * judged
        return outputs

    def supervised_loss(self, hidden: Tensor, targets: Tensor, weights: Tensor | None = None) -> Tensor:
        """Cross-entropy of the output head on gathered hidden states, optionally in chunks of rows; with `weights`
        (one per target) the weighted mean."""
        head = self.causal_lm.get_output_embeddings()
        if targets.numel() == 0:
            return hidden.sum() * 0.0
        chunk = self.loss_chunk_size or targets.numel()
        total = hidden.new_zeros((), dtype=torch.float32)
        for start in range(0, targets.numel(), chunk):
            logits = head(hidden[start : start + chunk]).float()
            losses = F.cross_entropy(logits, targets[start : start + chunk], reduction="none")
            if weights is not None:
                losses = losses * weights[start : start + chunk]
            total = total + losses.sum()
        return total / (targets.numel() if weights is None else weights.sum())

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
        source: str | None = "auto",
        number_guard: Any = None,
        **kwargs: Any,
    ) -> GenerationOutput:
        """Generate continuations (real token ids, [B, <=max_new_tokens], padded with `pad_token_id`).

        The prompt is left-padded after splicing and decoded with the KV cache by transformers' `generate`. With
        grounding, values come from `source` (auto / input / readout); every quantity token generated is embedded with
        its value; `number_guard` (grok.mllm.generate.NumberGuard) keeps the model from starting a number in digits.
        """
        prepared = self.prepare_inputs(batch, padding_side="left", source=source if self.grounding else None)
        spliced = prepared.spliced
        options: dict[str, Any] = {"do_sample": do_sample, "max_new_tokens": max_new_tokens, **kwargs}
        if do_sample:
            options.update(temperature=temperature, top_p=top_p)
        if eos_token_id is not None:
            options["eos_token_id"] = int(self._compact(torch.tensor(eos_token_id)))
        if pad_token_id is not None:
            options["pad_token_id"] = int(self._compact(torch.tensor(pad_token_id)))
        if number_guard is not None:
            processors = list(options.pop("logits_processor", None) or [])
            options["logits_processor"] = [*processors, number_guard.processor(self.vocabulary)]
        streamer = kwargs.get("streamer")
        if streamer is not None and hasattr(streamer, "set_quantities"):  # a streamer that writes quantity tokens
            streamer.set_quantities(prepared.quantities)
        context = (
            self.grounding.values_in_context(prepared.quantities)
            if prepared.quantities is not None
            else contextlib.nullcontext()
        )
        with context:
            generated = self.causal_lm.generate(
                inputs_embeds=spliced.inputs_embeds, attention_mask=spliced.attention_mask, use_cache=True, **options
            )
        ids = self.vocabulary.to_real(generated) if self.vocabulary is not None else generated
        return GenerationOutput(ids, prepared.quantities)


def _pairs(oct_owner: Tensor, cfp_owner: Tensor) -> Tensor:
    """[n_pairs, 2] indices (OCT image, CFP image) of the k-th OCT and k-th CFP image of the same sample."""
    pairs: list[tuple[int, int]] = []
    for sample in torch.unique(torch.cat([oct_owner, cfp_owner])).tolist():
        oct_images = (oct_owner == sample).nonzero().flatten().tolist()
        cfp_images = (cfp_owner == sample).nonzero().flatten().tolist()
        pairs += list(zip(oct_images, cfp_images, strict=False))
    return torch.tensor(pairs, dtype=torch.long).reshape(-1, 2)
