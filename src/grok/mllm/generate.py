"""Batched report generation (KV cache, greedy or sampling) over an instruction dataset or single prompts."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from grok.mllm.collator import InstructCollator
from grok.mllm.datamodule import InstructionDataset
from grok.mllm.model import GrokMLLM
from grok.mllm.tokenizer import ENDOFTEXT, IM_END


def generation_options(settings: Mapping[str, Any]) -> dict[str, Any]:
    """`max_new_tokens`, `do_sample`, `temperature`, `top_p` (+ optional `repetition_penalty`,
    `no_repeat_ngram_size`) from a `generation` config node."""
    options = {
        "max_new_tokens": int(settings.get("max_new_tokens", 256)),
        "do_sample": bool(settings.get("do_sample", False)),
        "temperature": float(settings.get("temperature", 1.0)),
        "top_p": float(settings.get("top_p", 1.0)),
    }
    for key in ("repetition_penalty", "no_repeat_ngram_size"):
        if settings.get(key) is not None:
            options[key] = settings[key]
    return options


@torch.no_grad()
def generate_batch(model: GrokMLLM, tokenizer: Any, batch: Mapping[str, Any], **options: Any) -> list[str]:
    """Decoded assistant replies for one collated (left-padded) batch."""
    generated = model.generate(
        batch,
        eos_token_id=tokenizer.convert_tokens_to_ids(IM_END),
        pad_token_id=tokenizer.convert_tokens_to_ids(ENDOFTEXT),
        **options,
    )
    return [text.strip() for text in tokenizer.batch_decode(generated, skip_special_tokens=True)]


def generate_reports(
    model: GrokMLLM,
    tokenizer: Any,
    dataset: InstructionDataset,
    batch_size: int = 8,
    settings: Mapping[str, Any] | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> Iterator[dict[str, Any]]:
    """Yield `{"id", "prediction", "reference"}` for every prompt of a generation dataset, in batches.

    Prompts are sorted by length so each batch pads little; results come back in the dataset's order per batch.
    """
    order = sorted(range(len(dataset)), key=lambda index: -dataset.lengths[index])
    loader = DataLoader(
        torch.utils.data.Subset(dataset, order),
        batch_size=batch_size,
        shuffle=False,
        collate_fn=InstructCollator(tokenizer.pad_token_id, "left"),
    )
    options = generation_options(settings or {})
    model.eval().to(device)
    for batch in tqdm(loader, desc="generating reports", disable=not progress):
        batch = {key: value.to(device) if torch.is_tensor(value) else value for key, value in batch.items()}
        texts = generate_batch(model, tokenizer, batch, **options)
        for record_id, text, reference in zip(
            batch["ids"], texts, batch.get("reference", [None] * len(texts)), strict=True
        ):
            yield {"id": record_id, "prediction": text, "reference": reference}


def write_predictions(
    rows: Sequence[Mapping[str, Any]] | Iterator[Mapping[str, Any]], path: str | Path, model_name: str
) -> Path:
    """Write predictions JSONL in the benchmark's format (contract 6): id, prediction, model."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps({"id": row["id"], "prediction": row["prediction"], "model": model_name}) + "\n")
    return path
