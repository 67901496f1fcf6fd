"""Counterfactual value augmentation: training conversations whose values differ from the eye's, rewritten by stage one.

A few hundred training eyes, seen a dozen times each, let a small language model learn its reports by heart instead
of reading the values it is given (measured: the tiny default quoted a VCDR of 0.74 against a range of 0.10-0.60 as
"within the normal range"). A counterfactual record keeps the eye's images but swaps a share of its quantities with
other training eyes' values; stage one's own record factory writes the prompt and the answer for the new row, so the
text follows the values exactly and every epoch shows the model new combinations. The read-out head still learns
the eye's true values (the dataset keeps them apart as `readout_values`).
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from typing import Any

from grok.knowledge.base import KnowledgeBase
from grok.knowledge.generate import GenerationPlan, RecordFactory
from grok.knowledge.instructions import InstructionBuilder
from grok.knowledge.writer import ReportWriter

SPLIT = "train"


def row_of(record: Mapping[str, Any]) -> dict[str, Any]:
    """The biomarker-table row behind a stage-one record (its facts' values, eye, image paths)."""
    facts = record.get("facts") or {}
    eye_id = str(record.get("eye_id") or record.get("id"))
    subject, _, eye = eye_id.partition("_")
    row: dict[str, Any] = {**(facts.get("systemic") or {}), **(facts.get("biomarkers") or {})}
    row.update(subject_id=subject, eye=eye[:1] or "R")
    for modality, path in (record.get("images") or {}).items():
        row[f"{modality}_path"] = path
    return row


class CounterfactualRecords:
    """Writes counterfactual variants of training records (same task, same images, swapped values)."""

    def __init__(
        self,
        records: Sequence[Mapping[str, Any]],
        kb: KnowledgeBase,
        keys: Sequence[str],
        swap_share: float = 0.5,
        style_weights: Mapping[str, float] | None = None,
        seed: int = 0,
    ) -> None:
        if not 0.0 < swap_share <= 1.0:
            raise ValueError(f"counterfactual swap_share must be in (0, 1], got {swap_share}")
        eyes: dict[str, dict[str, Any]] = {}
        for record in records:
            if (record.get("facts") or {}).get("biomarkers"):
                eyes.setdefault(str(record.get("eye_id") or record.get("id")), row_of(record))
        self.donors = list(eyes.values())
        self.keys = tuple(keys)
        self.swap_share = swap_share
        builder = InstructionBuilder(ReportWriter(kb))
        styles = {SPLIT: dict(style_weights or {"structured": 1.0})}
        self._factories: dict[str, RecordFactory] = {}
        self._plan = lambda task: GenerationPlan(
            seed=seed, fractions={SPLIT: 1.0}, mix={SPLIT: {task: 1}}, style_weights=styles
        )
        self._builder = builder
        self._kb = kb

    def _factory(self, task: str) -> RecordFactory:
        if task not in self._factories:
            self._factories[task] = RecordFactory(self._kb, self._builder, self._plan(task))
        return self._factories[task]

    def variant(self, record: Mapping[str, Any], rng: random.Random) -> dict[str, Any] | None:
        """A record of the same task and images for the eye's row with a share of its values swapped (None for a
        record without facts, which cannot be rewritten)."""
        if not self.donors or not (record.get("facts") or {}).get("biomarkers"):
            return None
        row = row_of(record)
        for key in self.keys:
            if rng.random() < self.swap_share:
                donor = self.donors[int(rng.random() * len(self.donors))]
                row[key] = donor.get(key)
        eye_id = str(record.get("eye_id") or record.get("id"))
        _, lines = self._factory(str(record.get("task", "report"))).records(row, eye_id, SPLIT)
        rewritten = json.loads(lines[0])
        rewritten["images"] = dict(record.get("images") or {})
        rewritten["id"] = f"{record.get('id')}-counterfactual"
        return rewritten
