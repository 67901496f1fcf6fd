"""Assemble a GrokMLLM from its config parts; frozen weights come from files or a seeded random init."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from grok.grounding.config import GroundingSettings, judgement_phrases
from grok.grounding.conversation import ConversationGrounding
from grok.grounding.model import QuantityGrounding
from grok.grounding.symbols import QuantityTokens
from grok.grounding.values import QuantityStatistics, judgement_names
from grok.mllm.adaptation import adapt_language_model
from grok.mllm.chat import DEFAULT_SYSTEM_PROMPT, render_conversation
from grok.mllm.language_model import build_language_model
from grok.mllm.model import GrokMLLM
from grok.mllm.tokenizer import placeholder_ids
from grok.mllm.vocab_trim import VocabularyMap, build_vocabulary_map
from grok.models.slices import slice_count

log = logging.getLogger(__name__)


def _corpus_texts(
    files: Sequence[str | Path], system_prompt: str | None, grounding: ConversationGrounding | None
) -> Iterable[str]:
    from grok.mllm.instructions import read_instructions

    for file in files:
        for record in read_instructions(file):
            turns = grounding.grounded_turns(record) if grounding is not None else record["conversations"]
            yield render_conversation(turns, system_prompt)


def build_vocabulary(
    tokenizer: Any,
    trim: bool,
    corpus: Sequence[str] = (),
    map_file: str | None = None,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    grounding: ConversationGrounding | None = None,
) -> VocabularyMap | None:
    """The trimmed vocabulary: read from `map_file` (an export's vocab_map.json) or built from the `corpus` JSONL
    files (their numbers as quantity tokens with `grounding`, every quantity token kept); None when `trim` is off."""
    if not trim:
        return None
    if map_file:
        return VocabularyMap.load(map_file)
    if not corpus:
        raise ValueError("model.vocabulary.trim=true needs model.vocabulary.corpus (instruction JSONL files)")
    extra = grounding.tokens.tokens if grounding is not None else ()
    vocabulary = build_vocabulary_map(tokenizer, _corpus_texts(corpus, system_prompt, grounding), extra_tokens=extra)
    log.info("trimmed vocabulary: %d of %d token ids", vocabulary.size, len(tokenizer))
    return vocabulary


def seeded(seed: int | None, build: Callable[[], nn.Module]) -> nn.Module:
    """Build under a fixed RNG seed (without disturbing the global RNG): random frozen weights are reproducible."""
    if seed is None:
        return build()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def build_grok_mllm(
    tokenizer: Any,
    llm: Mapping[str, Any],
    adaptation: Mapping[str, Any],
    encoders: Mapping[str, Callable[[], nn.Module] | nn.Module | None],
    fusion: Callable[..., nn.Module],
    vocabulary: VocabularyMap | None = None,
    freeze_encoders: bool = True,
    loss_chunk_size: int | None = None,
    gradient_checkpointing: bool = False,
    init_seed: int | None = 0,
    grounding: GroundingParts | None = None,
    oct_slices: object = None,
    slice_aggregator: Callable[..., nn.Module] | None = None,
) -> GrokMLLM:
    """A GrokMLLM: language model (`llm` node) tuned as the `adaptation` node says (LoRA, QLoRA, full or frozen),
    encoders and `fusion(oct_dim, cfp_dim, llm_dim, oct_tokens, cfp_tokens)` (token counts None for a missing modality).

    `encoders` values are modules or zero-argument builders (called under `init_seed`, so random encoders are the
    same in every process and at inference); a None value leaves that modality out. With `oct_slices` (a volume's
    slice selection, grok.models.slices) the OCT input is S slices: `slice_aggregator(dim, num_slices)` pools them for
    the language model and the ridge read-out fits on all S x N tokens.
    """
    llm_options = {
        key: value
        for key, value in llm.items()
        if key not in ("name", "tokenizer_path", "trim_vocabulary", "lora_modules_to_save")
    }
    adaptation_options = dict(adaptation)
    quantization = adaptation_options.pop("quantization", None)
    language_model = seeded(
        init_seed,
        lambda: build_language_model(
            tokenizer_size=len(tokenizer), vocabulary=vocabulary, quantization=quantization, **llm_options
        ),
    )
    added = list(placeholder_ids(tokenizer).values())
    if grounding is not None:
        added += tokenizer.convert_tokens_to_ids(list(grounding.tokens.tokens))
    added_rows = torch.tensor(added, dtype=torch.long)
    added_rows = vocabulary.to_compact(added_rows) if vocabulary is not None else added_rows
    language_model = adapt_language_model(
        language_model,
        new_token_rows=added_rows.tolist(),
        gradient_checkpointing=gradient_checkpointing,
        pretrained=bool(llm.get("pretrained_path")),
        **adaptation_options,
    )
    built = {
        modality: seeded(init_seed, encoder) if callable(encoder) and not isinstance(encoder, nn.Module) else encoder
        for modality, encoder in encoders.items()
        if encoder is not None
    }
    llm_dim = language_model.config.hidden_size
    fusion_module = seeded(
        init_seed,
        lambda: fusion(
            oct_dim=built["oct"].embed_dim if "oct" in built else llm_dim,
            cfp_dim=built["cfp"].embed_dim if "cfp" in built else llm_dim,
            llm_dim=llm_dim,
            oct_tokens=built["oct"].num_patches if "oct" in built else None,
            cfp_tokens=built["cfp"].num_patches if "cfp" in built else None,
        ),
    )
    num_slices = slice_count(oct_slices)
    aggregator = None
    if num_slices is not None and "oct" in built:
        if slice_aggregator is None:
            raise ValueError("data.oct_slices is set but model.slice_aggregator is null: the volumes need one")
        aggregator = seeded(init_seed, lambda: slice_aggregator(dim=built["oct"].embed_dim, num_slices=num_slices))
    ids = placeholder_ids(tokenizer)
    quantity_grounding = None
    if grounding is not None:
        shapes = {m: (int(e.num_patches), int(e.embed_dim)) for m, e in built.items()}
        if aggregator is not None:  # the ridge read-out reads every slice's tokens
            shapes["oct"] = (num_slices * shapes["oct"][0], shapes["oct"][1])
        quantity_grounding = seeded(init_seed, lambda: grounding.module(tokenizer, vocabulary, llm_dim, shapes))
    return GrokMLLM(
        language_model,
        built,
        fusion_module,
        {modality: ids[modality] for modality in ("oct", "cfp")},
        vocabulary=vocabulary,
        freeze_encoders=freeze_encoders,
        loss_chunk_size=loss_chunk_size,
        grounding=quantity_grounding,
        slice_aggregator=aggregator,
    )


@dataclass
class GroundingParts:
    """What a grounded GrokMLLM is built from: the settings, the knowledge base's quantity tokens, the statistics."""

    settings: GroundingSettings
    conversation: ConversationGrounding
    statistics: QuantityStatistics

    @property
    def tokens(self) -> QuantityTokens:
        """The quantity tokens."""
        return self.conversation.tokens

    def judgement_rows(self, tokenizer: Any, vocabulary: VocabularyMap | None) -> torch.Tensor:
        """Embedding rows of the knowledge base's judgement words (every sub-word, with and without a leading space;
        rows a trimmed vocabulary lacks are left out)."""
        ids: set[int] = set()
        for phrase in judgement_phrases(self.conversation.kb):
            for text in (phrase, " " + phrase, phrase.capitalize(), " " + phrase.capitalize()):
                ids.update(tokenizer(text, add_special_tokens=False)["input_ids"])
        rows = torch.tensor(sorted(ids), dtype=torch.long)
        if vocabulary is None:
            return rows
        kept = vocabulary.to_compact(rows)
        return kept[vocabulary.to_real(kept) == rows]

    def module(
        self,
        tokenizer: Any,
        vocabulary: VocabularyMap | None,
        llm_dim: int,
        token_shapes: Mapping[str, tuple[int, int]],
    ) -> QuantityGrounding:
        """The QuantityGrounding module (token rows follow the trimmed vocabulary when there is one)."""
        ids = tokenizer.convert_tokens_to_ids(self.tokens.tokens)
        unknown = [t for t, i in zip(self.tokens.tokens, ids, strict=True) if i is None or i == tokenizer.unk_token_id]
        if unknown:
            raise ValueError(
                f"the tokenizer lacks {len(unknown)} quantity token(s) (e.g. {unknown[0]}): build it with "
                "extra_tokens=grok.grounding.config.token_strings(grounding) (conf/mllm.yaml `tokenizer`)"
            )
        rows = torch.tensor(ids, dtype=torch.long)
        rows = vocabulary.to_compact(rows) if vocabulary is not None else rows
        settings = self.settings
        kb = self.conversation.kb
        decimals = torch.tensor([kb.decimals_of(key) for key in self.tokens.keys])
        valid = [kb.schema.biomarkers[key].valid_range or (-math.inf, math.inf) for key in self.tokens.keys]
        return QuantityGrounding(
            self.tokens,
            self.statistics,
            rows,
            llm_dim,
            modalities=tuple(token_shapes),
            readout=settings.readout,
            token_shapes=token_shapes,
            value_hidden_dim=settings.value_hidden_dim,
            readout_hidden_dim=settings.readout_hidden_dim,
            readout_loss_weight=settings.readout_loss_weight,
            judgement_weight=settings.judgement_weight,
            judgement_window=settings.judgement_window,
            judgement_rows=self.judgement_rows(tokenizer, vocabulary) if settings.judgement_vocabulary else None,
            value_context=settings.value_context,
            context_hidden_dim=settings.context_hidden_dim,
            num_judgements=len(judgement_names(kb)) if settings.judgement_head else 0,
            judgement_loss_weight=settings.judgement_loss_weight,
            carry_window=settings.carry_window,
            preamble=settings.preamble,
            decimals=decimals,
            valid_range=torch.tensor(valid, dtype=torch.float32),
            findings_kb=kb if settings.qualitative == "finding_readout" else None,
        )


def frozen_checksum(model: nn.Module) -> float:
    """Sum of |w| over frozen parameters: detects frozen weights that differ from those a checkpoint was trained on."""
    total = 0.0
    for parameter in model.parameters():
        if not parameter.requires_grad and parameter.dtype.is_floating_point:
            total += float(parameter.detach().double().abs().sum())
    return total
