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
    """Writes counterfactual variants of training records: same task and images with swapped values (`variant`), or
    the same eye without one of its images (`without_image`, whose quantities `image_keys[modality]` lists)."""

    def __init__(
        self,
        records: Sequence[Mapping[str, Any]],
        kb: KnowledgeBase,
        keys: Sequence[str],
        swap_share: float = 0.5,
        style_weights: Mapping[str, float] | None = None,
        seed: int = 0,
        image_keys: Mapping[str, Sequence[str]] | None = None,
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
        self.image_keys = {modality: tuple(keys) for modality, keys in (image_keys or {}).items()}
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
        rewritten = self._rewrite(record, row)
        rewritten["images"] = dict(record.get("images") or {})
        rewritten["id"] = f"{record.get('id')}-counterfactual"
        return rewritten

    def without_image(self, record: Mapping[str, Any], modality: str) -> dict[str, Any] | None:
        """The record as stage one writes it for an eye without its `modality` image (modality dropout): no
        placeholder for it in the prompt, the quantities that image measures unmeasured in the row, so the answer
        says so instead of quoting them (None for a record without facts or without that image)."""
        images = dict(record.get("images") or {})
        if modality not in images or not (record.get("facts") or {}).get("biomarkers"):
            return None
        row = row_of(record)
        row.pop(f"{modality}_path", None)
        for key in self.image_keys.get(modality, ()):
            row[key] = None
        rewritten = self._rewrite(record, row)
        rewritten["images"] = {m: path for m, path in images.items() if m != modality}
        rewritten["id"] = f"{record.get('id')}-without-{modality}"
        return rewritten

    def _rewrite(self, record: Mapping[str, Any], row: Mapping[str, Any]) -> dict[str, Any]:
        """Stage one's record of the same task for `row` (the eye's id, this split's plan)."""
        eye_id = str(record.get("eye_id") or record.get("id"))
        _, lines = self._factory(str(record.get("task", "report"))).records(row, eye_id, SPLIT)
        return json.loads(lines[0])
