"""Value tables: the number behind every quantity token of one eye, and where it came from.

A table holds, for each schema quantity (`QuantityTokens.keys`), its value (NaN when unknown), whether that value is
an input (stated by the prompt or a supplied table row) and the person's reference bounds under the knowledge base.
Training tables come from a record's `facts` (every measured value known: teacher forcing); inference tables hold only
what the inputs state, the read-out head filling in the image-derived rest (grok.grounding.model).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from grok.grounding.symbols import QuantityTokens
from grok.knowledge.base import KnowledgeBase

# codes 0-4 of a resolved table; withheld: an estimate the decided findings reject (grok.grounding.findings);
# absent: measured by an image the sample does not have (never estimated; written "not assessed")
SOURCES = ("missing", "input", "readout", "withheld", "absent")
SOURCE_CODES = {name: code for code, name in enumerate(SOURCES)}


@dataclass
class QuantityTable:
    """One eye's quantity values ([K] arrays in `QuantityTokens.keys` order)."""

    values: np.ndarray  # float, NaN = unknown
    stated: np.ndarray  # bool: the value is an input (prompt or supplied row)
    low: np.ndarray  # float, NaN = no reference range
    high: np.ndarray
    sex: str | None = None  # the person's sex where known (reference ranges, the rules)
    judgements: np.ndarray | None = None  # float 0/1 over `judgement_names`: the record's findings and diagnoses

    def as_item(self) -> dict[str, Any]:
        """The dataset item's fields (arrays stacked by the collator, the sex listed)."""
        return {
            "quantity_values": self.values.astype(np.float32),
            "quantity_stated": self.stated,
            "quantity_low": self.low.astype(np.float32),
            "quantity_high": self.high.astype(np.float32),
            "quantity_sex": self.sex,
            **({} if self.judgements is None else {"judgement_targets": self.judgements.astype(np.float32)}),
        }


def stated_values(values: Iterable[float]) -> list[float]:
    """Float32 values (a value table's) as the shortest decimals they stand for: 0.7 stays 0.7, not 0.699999988, so
    a read-out estimate (already rounded to the decimals a report writes) meets the knowledge base's "at least 0.7"
    exactly as its text "0.70" reads (NaN kept). A stated input keeps its own decimals."""
    return [float(str(np.float32(v))) for v in values]


def _number(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number if math.isfinite(number) else math.nan


def reference_bounds(
    tokens: QuantityTokens, kb: KnowledgeBase, age: float | None, sex: str | None
) -> tuple[np.ndarray, np.ndarray]:
    """The person's (low, high) reference bounds of every quantity under the knowledge base (NaN without a range)."""
    low = np.full(len(tokens.keys), np.nan)
    high = np.full(len(tokens.keys), np.nan)
    age = None if age is None or math.isnan(age) else age
    for index, key in enumerate(tokens.keys):
        bounds = kb.reference_range(key, age, sex)
        if bounds is not None:
            low[index], high[index] = bounds
    return low, high


def table_from_values(
    values: Mapping[str, Any],
    tokens: QuantityTokens,
    kb: KnowledgeBase,
    sex: str | None = None,
    stated: Iterable[str] | None = None,
) -> QuantityTable:
    """A table from {key: value}; `stated` names the keys that are inputs (default: every known value)."""
    array = np.array([_number(values.get(key)) for key in tokens.keys])
    known = {key for key in tokens.keys if not math.isnan(array[tokens.key_index[key]])}
    stated_keys = known if stated is None else set(stated) & known
    low, high = reference_bounds(tokens, kb, _none_if_nan(array[tokens.key_index["age_years"]]), sex)
    return QuantityTable(array, np.array([key in stated_keys for key in tokens.keys]), low, high, sex)


def judgement_names(kb: KnowledgeBase) -> tuple[str, ...]:
    """What the value context learns to judge: the knowledge base's findings, then the schema's diagnostic labels."""
    return (*kb.findings, *kb.schema.label_names)


def table_from_facts(facts: Mapping[str, Any], tokens: QuantityTokens, kb: KnowledgeBase) -> QuantityTable:
    """A record's table: every value its `facts` hold (biomarkers and systemic), all counted as known, and the
    findings and diagnoses stage one derived from them (`judgements`, the value context's targets)."""
    values = {**(facts.get("systemic") or {}), **(facts.get("biomarkers") or {})}
    sex = (facts.get("systemic") or {}).get("sex")
    table = table_from_values(values, tokens, kb, sex=sex if isinstance(sex, str) else None)
    judged = {*(facts.get("findings") or ()), *(facts.get("diagnoses") or ())}
    table.judgements = np.array([name in judged for name in judgement_names(kb)], dtype=np.float32)
    return table


def _none_if_nan(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


@dataclass
class QuantityStatistics:
    """Per-quantity mean and standard deviation of the training split (standardises values for the model)."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]], tokens: QuantityTokens) -> QuantityStatistics:
        """Statistics over the distinct eyes of `records` (a key never seen gets mean 0, std 1)."""
        seen: set[str] = set()
        columns: list[list[float]] = [[] for _ in tokens.keys]
        for record in records:
            eye = record.get("eye_id") or record.get("id")
            if eye in seen:
                continue
            seen.add(eye)
            facts = record.get("facts") or {}
            values = {**(facts.get("systemic") or {}), **(facts.get("biomarkers") or {})}
            for index, key in enumerate(tokens.keys):
                number = _number(values.get(key))
                if not math.isnan(number):
                    columns[index].append(number)
        mean = np.array([np.mean(c) if c else 0.0 for c in columns])
        std = np.array([np.std(c) if len(c) > 1 else 1.0 for c in columns])
        return cls(mean, np.where(std > 1e-8, std, 1.0))

    def save(self, path: str | Path, tokens: QuantityTokens) -> None:
        """Write {key: [mean, std]} as JSON (`quantity_statistics.json` in an export)."""
        payload = {key: [float(m), float(s)] for key, m, s in zip(tokens.keys, self.mean, self.std, strict=True)}
        Path(path).write_text(json.dumps(payload, indent=1), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path, tokens: QuantityTokens) -> QuantityStatistics:
        """Read statistics written by `save`; every quantity of `tokens` must be there."""
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
        missing = [key for key in tokens.keys if key not in payload]
        if missing:
            raise ValueError(f"{path}: no statistics for quantities {missing[:5]}")
        return cls(np.array([payload[k][0] for k in tokens.keys]), np.array([payload[k][1] for k in tokens.keys]))
