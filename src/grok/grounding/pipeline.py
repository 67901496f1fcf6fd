"""The pipeline baseline (and product mode `grok-infer mode=rules`): measure, then apply the rules; no language model.

Each eye's values in force (stated inputs, the read-out head's estimates of the rest, as the grounding source says)
go through the knowledge engine and its chain-of-thought writer, exactly as stage one writes a reference report. It
tells how much the language model adds over "measure, then apply the rules", and it never types a number either.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from grok.grounding.render import QuotedQuantity
from grok.grounding.spans import strip_marks
from grok.grounding.values import SOURCES
from grok.knowledge.engine import evaluate_row
from grok.knowledge.phrasing import PhraseRng, biomarker_texts
from grok.knowledge.writer import ReportWriter, conclude
from grok.mllm.collator import InstructCollator


class RulesReporter:
    """Writes the knowledge engine's structured report from a grounded GrokMLLM's values in force."""

    def __init__(self, model: Any, writer: ReportWriter, estimate_marker: str = "≈", seed: int = 0) -> None:
        if model.grounding is None:
            raise ValueError("mode=rules needs a grounded export (grounding=auto | input | readout when training)")
        self.model = model
        self.writer = writer
        self.kb = writer.kb
        self.tokens = model.grounding.tokens
        self.texts = biomarker_texts(self.kb)
        self.estimate_marker = estimate_marker
        self.seed = seed

    @torch.no_grad()
    def batch_reports(self, batch: Mapping[str, Any], source: str = "auto") -> list[tuple[str, list[QuotedQuantity]]]:
        """(report, quoted quantities) of every sample of a collated batch."""
        estimates = self.model.readout_estimates(batch)
        resolved = self.model.grounding.resolve(batch, estimates, source)
        out = []
        for sample, record_id in enumerate(batch["ids"]):
            values = resolved.values[sample].tolist()
            codes = resolved.source[sample].tolist()
            row: dict[str, Any] = {k: v for k, v in zip(self.tokens.keys, values, strict=True) if not math.isnan(v)}
            row["sex"] = batch.get("quantity_sex", [None] * len(batch["ids"]))[sample]
            assessment = evaluate_row(row, self.kb)
            marked = self.writer.structured(assessment, conclude(assessment, []), PhraseRng(f"{self.seed}:{record_id}"))
            sources = {key: SOURCES[code] for key, code in zip(self.tokens.keys, codes, strict=True)}
            out.append(self._render(marked, row, sources, resolved.estimates[sample].tolist()))
        return out

    def _render(
        self, marked: str, row: Mapping[str, Any], sources: Mapping[str, str], estimates: list[float]
    ) -> tuple[str, list[QuotedQuantity]]:
        """The writer's text with estimates marked, and every number it writes with its value and source."""
        text, spans = strip_marks(marked)
        pieces, quoted, cursor, length = [], [], 0, 0
        for span in spans:
            symbol = self.tokens.symbol(span.symbol)
            before = text[cursor : span.start]
            pieces.append(before)
            length += len(before)
            number = text[span.start : span.end]
            source = sources[symbol.key] if symbol.kind == "value" else "knowledge_base"
            if source == "readout":
                pieces.append(self.estimate_marker)
                length += len(self.estimate_marker)
            pieces.append(number)
            estimate = estimates[self.tokens.key_index[symbol.key]]
            value = row.get(symbol.key) if symbol.kind == "value" else float(number)
            quoted.append(
                QuotedQuantity(
                    symbol.key,
                    symbol.symbol,
                    symbol.kind,
                    None if value is None else float(value),
                    number,
                    self.texts[symbol.key].unit.strip(),
                    source,
                    None if math.isnan(estimate) else float(estimate),
                    length,
                    length + len(number),
                )
            )
            length += len(number)
            cursor = span.end
        pieces.append(text[cursor:])
        return "".join(pieces), quoted


def rules_reports(
    reporter: RulesReporter,
    dataset: Any,
    tokenizer: Any,
    batch_size: int = 64,
    source: str = "auto",
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> Iterator[dict[str, Any]]:
    """Yield `{"id", "prediction", "grounding"}` for every prompt of a generation dataset."""
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=False, collate_fn=InstructCollator(tokenizer.pad_token_id, "left")
    )
    reporter.model.eval().to(device)
    for batch in tqdm(loader, desc="rules reports", disable=not progress):
        batch = {key: value.to(device) if torch.is_tensor(value) else value for key, value in batch.items()}
        for record_id, (text, quoted) in zip(batch["ids"], reporter.batch_reports(batch, source), strict=True):
            yield {"id": record_id, "prediction": text, "grounding": [q.as_dict() for q in quoted]}
