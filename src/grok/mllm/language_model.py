"""The language model: any local transformers causal LM (architecture from its config.json: Qwen2, Llama/SmolLM2, ...),
or a tiny random Qwen2 config; optional 4-bit; optionally with a trimmed vocabulary."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoModelForCausalLM, BitsAndBytesConfig, PreTrainedModel, Qwen2Config, Qwen2ForCausalLM

from grok.mllm.vocab_trim import VocabularyMap

log = logging.getLogger(__name__)


def _dtype(name: str | torch.dtype) -> torch.dtype:
    return name if isinstance(name, torch.dtype) else getattr(torch, str(name))


def bnb_config(quantization: Mapping[str, Any]) -> BitsAndBytesConfig:
    """A bitsandbytes 4-bit config from the `lora.quantization` node (nf4, double quant, compute dtype)."""
    options = dict(quantization)
    options["bnb_4bit_compute_dtype"] = _dtype(options.get("bnb_4bit_compute_dtype", "float32"))
    return BitsAndBytesConfig(**options)


def build_language_model(
    tokenizer_size: int,
    pretrained_path: str | None = None,
    config: Mapping[str, Any] | None = None,
    dtype: str = "float32",
    attn_implementation: str = "sdpa",
    vocabulary: VocabularyMap | None = None,
    quantization: Mapping[str, Any] | None = None,
) -> PreTrainedModel:
    """The causal LM of `pretrained_path` (a local folder; its class from config.json) or a random Qwen2ForCausalLM
    with `config` (the tiny default).

    A pretrained table shorter than the tokenizer (GROK's added tokens) grows to `tokenizer_size` rows (new rows at the
    mean of the pretrained ones); with `vocabulary` the embedding and output tables then hold only its rows
    (pretrained rows are sliced out, a random model is built at that size). `quantization` loads the
    linear layers in bitsandbytes 4-bit (QLoRA); a random model is saved to a temporary folder and reloaded so the
    same transformers loading path quantizes it.
    """
    quantization_config = bnb_config(quantization) if quantization else None
    if pretrained_path:
        path = Path(pretrained_path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"llm.pretrained_path={path} has no config.json (expected a local transformers model folder)"
            )
        model = AutoModelForCausalLM.from_pretrained(
            str(path),
            dtype=_dtype(dtype),
            local_files_only=True,
            attn_implementation=attn_implementation,
            quantization_config=quantization_config,
        )
        if model.get_input_embeddings().num_embeddings < tokenizer_size:
            model.resize_token_embeddings(tokenizer_size, mean_resizing=True)
        if vocabulary is not None:
            trim_vocabulary(model, vocabulary)
        return model
    if config is None:
        raise ValueError("llm: give either pretrained_path (a local model folder) or config (a random Qwen2 config)")
    vocab_size = vocabulary.size if vocabulary is not None else tokenizer_size
    qwen_config = Qwen2Config(**{**dict(config), "vocab_size": vocab_size}, attn_implementation=attn_implementation)
    model = Qwen2ForCausalLM(qwen_config).to(_dtype(dtype))
    if quantization_config is None:
        return model
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        return Qwen2ForCausalLM.from_pretrained(
            folder, dtype=_dtype(dtype), quantization_config=quantization_config, device_map="cpu"
        )


def trim_vocabulary(model: PreTrainedModel, vocabulary: VocabularyMap) -> None:
    """Keep only `vocabulary`'s rows of the input embedding and the output head (in place)."""
    rows = vocabulary.compact_to_real
    embedding = model.get_input_embeddings()
    new_embedding = nn.Embedding(len(rows), embedding.embedding_dim, dtype=embedding.weight.dtype)
    new_embedding.weight.data.copy_(embedding.weight.data[rows])
    model.set_input_embeddings(new_embedding)
    head = model.get_output_embeddings()
    if model.config.tie_word_embeddings:
        model.tie_weights()
    else:
        new_head = nn.Linear(head.in_features, len(rows), bias=head.bias is not None, dtype=head.weight.dtype)
        new_head.weight.data.copy_(head.weight.data[rows])
        if head.bias is not None:
            new_head.bias.data.copy_(head.bias.data[rows])
        model.set_output_embeddings(new_head)
    model.config.vocab_size = len(rows)
    log.info("vocabulary trimmed to %d rows", len(rows))
