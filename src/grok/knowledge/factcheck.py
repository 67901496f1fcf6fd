"""Fact checks of free text against the engine: quoted numbers and stated diagnoses (used by the LLM writer)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import lru_cache

from grok.schema.schema import Schema

NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?")
SENTENCE = re.compile(r"(?<=[.;!?])\s+|\n+")
NEGATION_CUES = (
    "no",
    "not",
    "without",
    "unlikely",
    "against",
    "absence",
    "absent",
    "excluded",
    "exclude",
    "rules out",
    "ruled out",
    "rule out",
    "rather than",
)


def numbers_in(text: str) -> list[float]:
    """Every number written in `text` (1/2 in '150/92' gives 150 and 92)."""
    return [float(m) for m in NUMBER.findall(text)]


def _close(value: float, targets: Iterable[float], tolerance: float) -> bool:
    return any(abs(value - t) <= max(tolerance * abs(t), 1e-6) for t in targets)


def number_problems(answer: str, required: Sequence[float], allowed: Sequence[float], tolerance: float) -> list[str]:
    """Problems with the numbers of `answer`: a required number dropped, or a number not among the allowed ones."""
    quoted = numbers_in(answer)
    problems = [f"dropped number {value:g}" for value in required if not _close(value, quoted, tolerance)]
    pool = [*allowed, *required]
    problems += [f"unsupported number {value:g}" for value in quoted if not _close(value, pool, tolerance)]
    return problems


_PATTERNS: dict[tuple[str, ...], tuple[tuple[re.Pattern[str], str], ...]] = {}


def _synonym_patterns(schema: Schema) -> tuple[tuple[re.Pattern[str], str], ...]:
    """(pattern, label) for every synonym of every disease label, longest first (so 'diabetic retinopathy' wins)."""
    key = tuple(f"{label.name}={'|'.join(label.synonyms)}" for label in schema.labels)
    if key not in _PATTERNS:
        _PATTERNS[key] = _compile_synonyms(schema)
    return _PATTERNS[key]


def _compile_synonyms(schema: Schema) -> tuple[tuple[re.Pattern[str], str], ...]:
    pairs = []
    for label in schema.labels:
        if label.normal:
            continue
        for synonym in {*label.synonyms, label.name, label.display}:
            flags = 0 if synonym.isupper() else re.IGNORECASE
            pairs.append((len(synonym), re.compile(rf"(?<![\w-]){re.escape(synonym)}(?![\w-])", flags), label.name))
    return tuple((pattern, name) for _, pattern, name in sorted(pairs, key=lambda p: -p[0]))


@lru_cache(maxsize=8)
def _negation_pattern(cues: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile(r"\b(?:" + "|".join(re.escape(c) for c in cues) + r")\b", re.IGNORECASE)


def stated_labels(text: str, schema: Schema, negation_cues: Sequence[str] = NEGATION_CUES) -> set[str]:
    """Labels a text asserts: disease synonyms outside negated sentences (only the `Conclusion:` part if present);
    the normal label when no disease is asserted."""
    if "Conclusion:" in text:
        text = text.split("Conclusion:", 1)[1]
    negation = _negation_pattern(tuple(negation_cues))
    found: set[str] = set()
    for sentence in SENTENCE.split(text):
        if negation.search(sentence):
            continue
        remaining = sentence
        for pattern, label in _synonym_patterns(schema):
            if pattern.search(remaining):
                found.add(label)
                remaining = pattern.sub(" ", remaining)
    return found or {schema.normal_label}


def diagnosis_problems(answer: str, expected: Iterable[str], schema: Schema) -> list[str]:
    """Problems with the diagnoses an answer states compared with the expected labels."""
    stated, wanted = stated_labels(answer, schema), set(expected)
    problems = [f"states unsupported diagnosis {label}" for label in sorted(stated - wanted)]
    problems += [f"omits diagnosis {label}" for label in sorted(wanted - stated)]
    return problems
