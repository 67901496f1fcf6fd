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

from grok.grounding.render import QuotedQuantity, render_marked
from grok.grounding.values import SOURCES, stated_values
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
        """(report, quoted quantities) of every sample of a collated batch; with a finding read-out
        (`grounding.qualitative=finding_readout`) the findings are its decisions, else the rules' on the values."""
        estimates = self.model.readout_estimates(batch)
        resolved = self.model.grounding.resolve(batch, estimates, source)
        out = []
        for sample, record_id in enumerate(batch["ids"]):
            values = stated_values(resolved.values[sample].tolist())
            codes = resolved.source[sample].tolist()
            row: dict[str, Any] = {k: v for k, v in zip(self.tokens.keys, values, strict=True) if not math.isnan(v)}
            row["sex"] = batch.get("quantity_sex", [None] * len(batch["ids"]))[sample]
            if resolved.decisions is not None:
                assessment = resolved.decisions[sample].assessment
            else:
                assessment = evaluate_row(row, self.kb)
            marked = self.writer.structured(assessment, conclude(assessment, []), PhraseRng(f"{self.seed}:{record_id}"))
            sources = {key: SOURCES[code] for key, code in zip(self.tokens.keys, codes, strict=True)}
            out.append(
                render_marked(
                    marked,
                    self.tokens,
                    self.texts,
                    row,
                    sources,
                    resolved.estimates[sample].tolist(),
                    self.estimate_marker,
                )
            )
        return out


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
