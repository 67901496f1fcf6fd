"""Grounding figures of the benchmark: free-typed numbers, quoted values by source, and input reliance.

- A *free-typed* number is one a report states that no grounding entry accounts for (a grounded GROK report lists
  every number it writes in its prediction's `grounding` field; any other model's numbers are all free-typed).
- Quoted values by source: each grounding entry's value against the eye's truth (`facts`), per source (`input`: what
  the prompt or a supplied row stated, `readout`: the read-out head's estimate, `knowledge_base`: reference bounds and
  thresholds).
- Input reliance: how often the stated diagnosis changes when a model is given another eye's images (with another
  label); a model that ignores its images changes it never.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?![\w])")


@dataclass
class GroundingCheck:
    """One report's numbers: how many are free-typed, and how the grounded ones compare with the truth."""

    numbers: int = 0
    free_typed: int = 0
    by_source: dict[str, list[int]] = field(default_factory=dict)  # source -> [correct, total]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (kept per report)."""
        return {"numbers": self.numbers, "free_typed": self.free_typed, "by_source": self.by_source}


def _truth(entry: Mapping[str, Any], facts: Mapping[str, Any]) -> float | None:
    key, kind = entry.get("key"), entry.get("kind", "value")
    if kind == "threshold":
        return entry.get("value")
    if kind in ("low", "high"):
        row = next((q for q in facts.get("quantities") or [] if q.get("name") == key), None)
        return None if row is None else row.get(kind)
    measured = {**(facts.get("systemic") or {}), **(facts.get("biomarkers") or {})}
    value = measured.get(key)
    return float(value) if isinstance(value, (int, float)) and not math.isnan(float(value)) else None


def check_grounding(
    text: str, grounding: Mapping[str, Any] | None, facts: Mapping[str, Any], tolerance: float = 0.10
) -> GroundingCheck:
    """Count a report's free-typed numbers and score its grounded quotes against `facts` (relative `tolerance`)."""
    quantities = list((grounding or {}).get("quantities") or [])
    covered = [(int(q["start"]), int(q["end"])) for q in quantities if "start" in q and "end" in q]
    check = GroundingCheck()
    for match in NUMBER.finditer(text):
        check.numbers += 1
        if not any(start <= match.start() < end for start, end in covered):
            check.free_typed += 1
    for entry in quantities:
        value = entry.get("value")
        if value is None:
            continue
        truth = _truth(entry, facts)
        source = str(entry.get("source", "unknown"))
        tally = check.by_source.setdefault(source, [0, 0])
        tally[1] += 1
        if truth is not None and abs(float(value) - truth) <= tolerance * max(abs(truth), 1e-9):
            tally[0] += 1
    return check


def summarise_grounding(checks: Sequence[GroundingCheck]) -> dict[str, Any]:
    """The model's grounding figures: free-typed numbers per report, and quote accuracy per source."""
    totals: dict[str, list[int]] = {}
    for check in checks:
        for source, (correct, total) in check.by_source.items():
            tally = totals.setdefault(source, [0, 0])
            tally[0] += correct
            tally[1] += total
    n = max(len(checks), 1)
    return {
        "numbers_per_report": sum(c.numbers for c in checks) / n,
        "free_typed_per_report": sum(c.free_typed for c in checks) / n,
        "reports_with_free_typed": sum(c.free_typed > 0 for c in checks),
        "quotes_by_source": {
            source: {"accuracy": correct / total if total else None, "n": total}
            for source, (correct, total) in sorted(totals.items())
        },
    }


def input_reliance(own: Sequence[Sequence[str]], other: Sequence[Sequence[str]]) -> dict[str, Any]:
    """How often the stated diagnosis changes with another eye's images (label sets per eye, aligned)."""
    pairs = list(zip(own, other, strict=True))
    changed = sum(set(a) != set(b) for a, b in pairs)
    return {"changed": changed / len(pairs) if pairs else None, "n": len(pairs)}
