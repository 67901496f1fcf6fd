"""Batched report generation (KV cache, greedy or sampling) over an instruction dataset or single prompts."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import LogitsProcessor

from grok.grounding.render import QuotedQuantity, ReportRenderer
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


@dataclass
class GeneratedReport:
    """One generated reply and, with grounding, the quantities it quotes."""

    text: str
    grounding: list[QuotedQuantity] | None = None


class NumberGuard:
    """Keeps a grounded model from writing a number in digits: a digit token may only continue a word ('HbA1c'),
    never follow a space, punctuation or another number's start (what the benchmark counts as a free-typed number)."""

    def __init__(self, tokenizer: Any) -> None:
        special = set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_encoder.values())
        vocabulary = tokenizer.get_vocab()
        self.size = len(tokenizer)
        self.digit_ids = sorted(i for t, i in vocabulary.items() if i not in special and any(c.isdigit() for c in t))
        self.word_end_ids = sorted(i for t, i in vocabulary.items() if i not in special and t[-1:].isalpha())

    def processor(self, vocabulary: Any = None) -> LogitsProcessor:
        """The logits processor over the model's rows (the trimmed vocabulary's, when it has one)."""
        size = vocabulary.size if vocabulary is not None else self.size

        def rows(ids: list[int]) -> torch.Tensor:
            mask = torch.zeros(size, dtype=torch.bool)
            if ids:
                tensor = torch.tensor(ids)
                if vocabulary is not None:
                    kept = vocabulary.real_to_compact[tensor] != vocabulary.real_to_compact[vocabulary.fallback_id]
                    tensor = vocabulary.real_to_compact[tensor[kept]]
                mask[tensor] = True
            return mask

        return _NumberGuardProcessor(rows(self.digit_ids), rows(self.word_end_ids))


class _NumberGuardProcessor(LogitsProcessor):
    def __init__(self, digits: torch.Tensor, word_ends: torch.Tensor) -> None:
        self.digits, self.word_ends = digits, word_ends

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        digits, word_ends = self.digits.to(scores.device), self.word_ends.to(scores.device)
        if input_ids.shape[1]:
            banned = ~word_ends[input_ids[:, -1].clamp(0, word_ends.numel() - 1)]
        else:
            banned = torch.ones(scores.shape[0], dtype=torch.bool, device=scores.device)
        mask = banned[:, None] & digits[None, : scores.shape[1]]
        return scores.masked_fill(mask, -math.inf)


@torch.no_grad()
def generate_batch(
    model: GrokMLLM,
    tokenizer: Any,
    batch: Mapping[str, Any],
    renderer: ReportRenderer | None = None,
    source: str | None = "auto",
    number_guard: NumberGuard | None = None,
    **options: Any,
) -> list[GeneratedReport]:
    """Replies for one collated (left-padded) batch; with grounding (`renderer` required) values come from `source`
    and quantity tokens are written from them; `number_guard` keeps it from starting a number in digits."""
    if model.grounding is not None and renderer is None:
        raise ValueError("a grounded model writes quantity tokens: generate_batch needs its ReportRenderer")
    output = model.generate(
        batch,
        eos_token_id=tokenizer.convert_tokens_to_ids(IM_END),
        pad_token_id=tokenizer.convert_tokens_to_ids(ENDOFTEXT),
        source=source,
        number_guard=number_guard,
        **options,
    )
    if output.quantities is None:
        texts = tokenizer.batch_decode(output.ids, skip_special_tokens=True)
        return [GeneratedReport(text.strip()) for text in texts]
    q = output.quantities
    reports = []
    for sample, ids in enumerate(output.ids.tolist()):
        arrays = [t[sample].tolist() for t in (q.values, q.source, q.low, q.high, q.estimates)]
        text, quoted = renderer.render(ids, *arrays)
        reports.append(GeneratedReport(text, quoted))
    return reports


def generate_reports(
    model: GrokMLLM,
    tokenizer: Any,
    dataset: InstructionDataset,
    batch_size: int = 8,
    settings: Mapping[str, Any] | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    renderer: ReportRenderer | None = None,
    source: str | None = "auto",
    forbid_digits: bool = False,
) -> Iterator[dict[str, Any]]:
    """Yield `{"id", "prediction", "reference", "grounding"}` for every prompt of a generation dataset, in batches.

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
    guard = NumberGuard(tokenizer) if forbid_digits else None
    model.eval().to(device)
    for batch in tqdm(loader, desc="generating reports", disable=not progress):
        batch = {key: value.to(device) if torch.is_tensor(value) else value for key, value in batch.items()}
        reports = generate_batch(model, tokenizer, batch, renderer, source, guard, **options)
        for record_id, report, reference in zip(
            batch["ids"], reports, batch.get("reference", [None] * len(reports)), strict=True
        ):
            grounding = None if report.grounding is None else [q.as_dict() for q in report.grounding]
            yield {"id": record_id, "prediction": report.text, "reference": reference, "grounding": grounding}


def write_predictions(
    rows: Sequence[Mapping[str, Any]] | Iterator[Mapping[str, Any]],
    path: str | Path,
    model_name: str,
    source: str | None = None,
) -> Path:
    """Write predictions JSONL in the benchmark's format (contract 6): id, prediction, model, and where the rows have
    it, `grounding` ({"source": the grounding source, "quantities": every quoted number})."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            record = {"id": row["id"], "prediction": row["prediction"], "model": model_name}
            if row.get("grounding") is not None:
                record["grounding"] = {"source": source, "quantities": row["grounding"]}
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path
