"""Quantity spans of text that stage one did not write: an LLM's rewrite of a report, a user's free-text prompt.

Stage one records its spans as it writes (grok.grounding.spans). For other text the numbers are found and linked:
- `match_to_values`: text written from a known row (the LLM writer, a user's own LLM-written reports): each number is
  matched to the row's values (values, reference bounds, KB thresholds) within a tolerance, the quantity named just
  before it winning ties; numbers that match nothing are counted, never guessed.
- `read_stated_quantities`: a prompt with no row behind it ("63-year-old woman, BP 150/92 mmHg, HbA1c 52"): each
  number is tied to the quantity it names (the benchmark's extractor), plus age and sex.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from grok.grounding.spans import Span
from grok.grounding.symbols import QuantityTokens, symbol_of

NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?![\w])")
AGE = re.compile(
    r"(?<![\w.])(\d{1,3})(?:\s*|-)(?:year|yr)s?(?:\s*|-)old\b|\b(?:age|aged)\s*:?\s*(\d{1,3})\b", re.IGNORECASE
)
SEX_WORDS = {
    "F": r"\b(?:woman|female|lady|girl|she|her)\b|\bsex\s*:?\s*F\b",
    "M": r"\b(?:man|male|gentleman|boy|he|his)\b|\bsex\s*:?\s*M\b",
}
NAME_WINDOW = 60  # characters before a number searched for the quantity it belongs to


@dataclass(frozen=True)
class MatchResult:
    """Spans found in a text, and the numbers that could not be tied to a quantity."""

    spans: list[Span]
    unmatched: list[str]


def _decimals(number: str) -> int:
    return len(number.split(".")[1]) if "." in number else 0


def match_to_values(
    text: str,
    candidates: Mapping[str, float],
    names: Mapping[str, list[str]] | None = None,
    tolerance: float = 0.02,
) -> MatchResult:
    """Spans of the numbers of `text` that state one of `candidates` ({symbol: value}).

    A number matches a candidate when it equals the value rounded to the number's own decimals, or lies within
    `tolerance` (relative) of it. Among several matches the one whose quantity is named (`names`: key -> phrases)
    closest before the number wins, then the closest value, then the first symbol.
    """
    spans: list[Span] = []
    unmatched: list[str] = []
    lowered = text.lower()
    for match in NUMBER.finditer(text):
        number = match.group(0)
        value = float(number)
        decimals = _decimals(number)
        found = []
        for symbol, candidate in candidates.items():
            rounded = round(candidate, decimals) == value
            close = abs(candidate - value) <= tolerance * max(abs(candidate), 1e-9)
            if rounded or close:
                found.append((symbol, abs(candidate - value)))
        if not found:
            unmatched.append(number)
            continue
        window = lowered[max(0, match.start() - NAME_WINDOW) : match.start()]
        best = max(found, key=lambda item, w=window: (_named_at(item[0], w, names), -item[1]))
        spans.append(Span(match.start(), match.end(), best[0]))
    return MatchResult(spans, unmatched)


def _named_at(symbol: str, window: str, names: Mapping[str, list[str]] | None) -> int:
    """Where in `window` the quantity of `symbol` is last named (-1: not named)."""
    phrases = (names or {}).get(symbol.split(":", 1)[1].split(".")[-1], [])
    return max((window.rfind(p.lower()) for p in phrases), default=-1)


def row_candidates(
    values: Mapping[str, float | None],
    ranges: Mapping[str, tuple[float, float]],
    tokens: QuantityTokens,
) -> dict[str, float]:
    """{symbol: value} of a row: its values, its person's reference bounds and the KB's fixed thresholds."""
    candidates: dict[str, float] = {}
    for key, value in values.items():
        if value is not None and key in tokens.key_index:
            candidates[symbol_of("value", key)] = float(value)
    for key, (low, high) in ranges.items():
        candidates[symbol_of("low", key)] = float(low)
        candidates[symbol_of("high", key)] = float(high)
    for symbol in tokens.symbols:
        if symbol.kind == "threshold":
            candidates[symbol.symbol] = float(symbol.threshold)
    return candidates


@dataclass(frozen=True)
class StatedQuantities:
    """What a free-text prompt states: spans of its numbers, their values, and the person's sex if said."""

    spans: list[Span]
    values: dict[str, float]
    sex: str | None
    unmatched: list[str]


def read_stated_quantities(text: str, vocabulary: object, tokens: QuantityTokens) -> StatedQuantities:
    """The quantities a prompt states, each number tied to the quantity it names (`vocabulary`: the benchmark's
    `grok.bench.text.Vocabulary`); age from '63-year-old' / 'age 63'; sex from the words used."""
    from grok.bench.text import AnalysedText

    spans: dict[int, Span] = {}
    values: dict[str, float] = {}
    for match in AGE.finditer(text):
        group = 1 if match.group(1) else 2
        spans[match.start(group)] = Span(match.start(group), match.end(group), symbol_of("value", "age_years"))
        values.setdefault("age_years", float(match.group(group)))
    for quote in AnalysedText(text, vocabulary).quoted_values:
        if quote.biomarker not in tokens.key_index or quote.start in spans:
            continue
        number = NUMBER.match(text, quote.start)
        if number is None:
            continue
        spans[quote.start] = Span(quote.start, number.end(), symbol_of("value", quote.biomarker))
        values.setdefault(quote.biomarker, quote.value)
    ordered = [spans[start] for start in sorted(spans)]
    covered = {span.start for span in ordered}
    unmatched = [m.group(0) for m in NUMBER.finditer(text) if m.start() not in covered]
    return StatedQuantities(ordered, values, stated_sex(text), unmatched)


def stated_sex(text: str) -> str | None:
    """'F' or 'M' when the text says (woman, male, sex: F, ...), else None."""
    return next((code for code, pattern in SEX_WORDS.items() if re.search(pattern, text, re.IGNORECASE)), None)
