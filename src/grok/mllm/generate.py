"""Batched report generation (KV cache, greedy or sampling) over an instruction dataset or single prompts."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import LogitsProcessor, StoppingCriteria, StoppingCriteriaList

from grok.grounding.render import QuotedQuantity, ReportRenderer
from grok.mllm.collator import InstructCollator
from grok.mllm.datamodule import InstructionDataset
from grok.mllm.model import GrokMLLM
from grok.mllm.tokenizer import IM_END
from grok.utils.train import derived_seed, seeded

log = logging.getLogger(__name__)
PARTIAL_SUFFIX = ".partial"


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


class SectionStop(StoppingCriteria):
    """Stops a sample once its generated text reaches one of `headers`: with decided findings, the knowledge base's
    writer writes everything from the qualitative section's header on, so generating it would be thrown away."""

    def __init__(self, tokenizer: Any, headers: Sequence[str], vocabulary: Any = None, window: int = 16) -> None:
        self.tokenizer, self.headers, self.vocabulary, self.window = tokenizer, tuple(headers), vocabulary, window

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.BoolTensor:
        tail = input_ids[:, -self.window :]
        real = self.vocabulary.to_real(tail) if self.vocabulary is not None else tail
        texts = self.tokenizer.batch_decode(real, skip_special_tokens=True)
        return torch.tensor([any(h in t for h in self.headers) for t in texts], device=input_ids.device)


def section_stops(model: GrokMLLM, tokenizer: Any, renderer: ReportRenderer | None) -> list[StoppingCriteria]:
    """[SectionStop at the qualitative (or conclusion) header] when the knowledge base writes the findings."""
    if renderer is None or renderer.writer is None or model.grounding is None or model.grounding.decider is None:
        return []
    return [SectionStop(tokenizer, renderer.section_headers, model.vocabulary)]


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
    stops = [*(options.pop("stopping_criteria", None) or []), *section_stops(model, tokenizer, renderer)]
    if stops:
        options["stopping_criteria"] = StoppingCriteriaList(stops)
    output = model.generate(
        batch,
        eos_token_id=tokenizer.convert_tokens_to_ids(IM_END),
        pad_token_id=tokenizer.pad_token_id,
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
        decision = q.decisions[sample] if q.decisions is not None else None
        text, quoted = renderer.render(ids, *arrays, decision=decision, record_id=str(batch["ids"][sample]))
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
    seed: int | None = None,
    skip_batches: int = 0,
) -> Iterator[dict[str, Any]]:
    """Yield `{"id", "prediction", "reference", "grounding"}` for every prompt of a generation dataset, in batches.

    Prompts go in `generation_order` (longest first, so each batch pads little); `skip_batches` leaves out the first
    batches of that order (a resumed run). With `seed`, batch n samples from a seed of (seed, n) alone, so a resumed
    run samples what an uninterrupted one would.
    """
    order = generation_order(dataset.lengths)[skip_batches * batch_size :]
    loader = DataLoader(
        torch.utils.data.Subset(dataset, order),
        batch_size=batch_size,
        shuffle=False,
        collate_fn=InstructCollator(tokenizer.pad_token_id, "left"),
    )
    options = generation_options(settings or {})
    guard = NumberGuard(tokenizer) if forbid_digits else None
    model.eval().to(device)
    batches = tqdm(loader, desc="generating reports", disable=not progress)
    for number, batch in enumerate(batches, start=skip_batches):
        batch = {key: value.to(device) if torch.is_tensor(value) else value for key, value in batch.items()}
        with seeded(None if seed is None else derived_seed(seed, "batch", number)):
            reports = generate_batch(model, tokenizer, batch, renderer, source, guard, **options)
        for record_id, report, reference in zip(
            batch["ids"], reports, batch.get("reference", [None] * len(reports)), strict=True
        ):
            grounding = None if report.grounding is None else [q.as_dict() for q in report.grounding]
            yield {"id": record_id, "prediction": report.text, "reference": reference, "grounding": grounding}


def generation_order(lengths: Sequence[int]) -> list[int]:
    """Dataset indices longest prompt first (a stable sort: ties keep the dataset's order)."""
    return sorted(range(len(lengths)), key=lambda index: -lengths[index])


def prediction_line(row: Mapping[str, Any], model_name: str, source: str | None = None) -> str:
    """One JSONL line of the benchmark's predictions format (contract 6): id, prediction, model, and where the row
    has it, `grounding` ({"source": the grounding source, "quantities": every quoted number}) and `images_absent`
    (the modalities whose image the report was written without)."""
    record = {"id": row["id"], "prediction": row["prediction"], "model": model_name}
    if row.get("grounding") is not None:
        record["grounding"] = {"source": source, "quantities": row["grounding"]}
    if row.get("images_absent"):
        record["images_absent"] = list(row["images_absent"])
    return json.dumps(record, ensure_ascii=False) + "\n"


def write_predictions(
    rows: Iterable[Mapping[str, Any]],
    path: str | Path,
    model_name: str,
    source: str | None = None,
) -> Path:
    """Write predictions JSONL (`prediction_line` per row) through `<path>.partial`, renamed into place at the end."""
    output = PredictionsOutput(path)
    output.start()
    output.append(rows, model_name, source)
    return output.finish()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class PredictionsOutput:
    """A predictions file written incrementally to `<path>.partial` (one flush per line) and renamed into place.

    A hidden state file beside it (`.<name>.state.json`) holds the `fingerprint` of what determines the output (set
    by the caller) and, once finished, the file's sha256: a rerun with the same fingerprint keeps a finished file
    (`up_to_date`) or continues a partial one from its last whole batch (`resume`).
    """

    def __init__(self, path: str | Path, fingerprint: str = "") -> None:
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + PARTIAL_SUFFIX)
        self.state_path = self.path.with_name(f".{self.path.name}.state.json")
        self.fingerprint = fingerprint
        self.handle: Any = None

    def _state(self) -> dict[str, Any]:
        try:
            return json.loads(self.state_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def _write_state(self, **state: Any) -> None:
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        tmp.write_text(json.dumps({"fingerprint": self.fingerprint, **state}, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self.state_path)

    def up_to_date(self) -> bool:
        """The finished file exists, unchanged, and was written for this fingerprint."""
        state = self._state()
        return (
            self.path.is_file()
            and state.get("fingerprint") == self.fingerprint
            and state.get("sha256") == _sha256(self.path)
        )

    def resume(self, batches: Sequence[Sequence[str]]) -> int:
        """Keep the partial file's leading whole `batches` (lists of ids, in generation order) when it was written for
        this fingerprint, truncating anything after them; return how many batches it holds (0: start afresh)."""
        if self._state().get("fingerprint") != self.fingerprint or not self.partial.is_file():
            self.start()
            return 0
        done, offset = 0, 0
        with self.partial.open("rb") as handle:
            lines = handle.read().split(b"\n")[:-1]  # the last piece is '' or a line cut short by a kill
        for batch in batches:
            chunk = lines[offset : offset + len(batch)]
            if [_line_id(line) for line in chunk] != list(batch):
                break
            done, offset = done + 1, offset + len(batch)
        size = sum(len(line) + 1 for line in lines[:offset])
        os.truncate(self.partial, size)
        self.handle = self.partial.open("a", encoding="utf-8")
        return done

    def start(self) -> None:
        """Begin an empty partial file for this fingerprint."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._write_state(complete=False)
        self.handle = self.partial.open("w", encoding="utf-8")

    def append(self, rows: Iterable[Mapping[str, Any]], model_name: str, source: str | None = None) -> None:
        """Write each row's line and flush it (a kill loses at most the line being written)."""
        for row in rows:
            self.handle.write(prediction_line(row, model_name, source))
            self.handle.flush()

    def finish(self) -> Path:
        """Rename the partial file into place (atomic) and record its hash; return the final path."""
        self.handle.close()
        os.replace(self.partial, self.path)
        self._write_state(complete=True, sha256=_sha256(self.path))
        return self.path


def _line_id(line: bytes) -> str | None:
    try:
        return json.loads(line)["id"]
    except (ValueError, KeyError, TypeError):
        return None
