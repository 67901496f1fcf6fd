"""Where a text states a quantity: spans recorded by the writer as it writes, kept beside the conversation.

The stage-one writer wraps every number it writes in invisible marks, `mark("q:macula_central_um", "342")`; once a
turn is complete `strip_marks` removes them and returns the plain text with the span of each number. A record keeps
the spans in `quantity_spans`: `[turn index, start, end, symbol]` with character offsets into that turn's text, so the
number `text[start:end]` is what the symbol renders to. Nothing is recovered by pattern matching from the text.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from grok.utils.errors import InputError

# Private-use code points: never produced by the templates, the tokenizer or a user.
MARK_OPEN, MARK_SEP, MARK_CLOSE = "\ue000", "\ue001", "\ue002"
MARKS = (MARK_OPEN, MARK_SEP, MARK_CLOSE)
SPANS_FIELD = "quantity_spans"


class Span(NamedTuple):
    """A quantity stated in a text: characters [start, end) render `symbol`."""

    start: int
    end: int
    symbol: str


class SpanError(InputError):
    """Marks or spans that do not fit the text they describe."""


def mark(symbol: str, text: str) -> str:
    """`text` (a rendered number) wrapped so that `strip_marks` records it as a span of `symbol`."""
    return f"{MARK_OPEN}{symbol}{MARK_SEP}{text}{MARK_CLOSE}"


def strip_marks(text: str) -> tuple[str, list[Span]]:
    """The text without marks, and the span of every marked number in it (in order)."""
    if MARK_OPEN not in text:
        return text, []
    pieces: list[str] = []
    spans: list[Span] = []
    length = cursor = 0
    while True:
        start = text.find(MARK_OPEN, cursor)
        if start < 0:
            pieces.append(text[cursor:])
            break
        separator = text.find(MARK_SEP, start)
        close = text.find(MARK_CLOSE, separator)
        if separator < 0 or close < 0:
            raise SpanError(f"unterminated quantity mark at character {start} of {text[:80]!r}")
        before = text[cursor:start]
        pieces.append(before)
        length += len(before)
        number = text[separator + 1 : close]
        spans.append(Span(length, length + len(number), text[start + 1 : separator]))
        pieces.append(number)
        length += len(number)
        cursor = close + 1
    return "".join(pieces), spans


def strip_conversation(turns: Sequence[Mapping[str, str]]) -> tuple[list[dict[str, str]], list[list]]:
    """Every turn's text without marks, and the record's `quantity_spans` ([turn, start, end, symbol] rows)."""
    clean, rows = [], []
    for index, turn in enumerate(turns):
        text, spans = strip_marks(turn["value"])
        clean.append({**turn, "value": text})
        rows.extend([index, s.start, s.end, s.symbol] for s in spans)
    return clean, rows


def spans_by_turn(rows: Iterable[Sequence], turns: int, source: str = "?") -> list[list[Span]]:
    """A record's `quantity_spans` rows grouped per turn, checked to be in order and inside the turn count."""
    grouped: list[list[Span]] = [[] for _ in range(turns)]
    for row in rows:
        if len(row) != 4:
            raise SpanError(f"{source}: quantity span {row!r} is not [turn, start, end, symbol]")
        turn, start, end, symbol = row
        if not (isinstance(turn, int) and 0 <= turn < turns) or not (0 <= start < end):
            raise SpanError(f"{source}: quantity span {row!r} does not fit a conversation of {turns} turns")
        if grouped[turn] and grouped[turn][-1].end > start:
            raise SpanError(f"{source}: quantity spans of turn {turn} overlap or are out of order at {row!r}")
        grouped[turn].append(Span(int(start), int(end), str(symbol)))
    return grouped


def first_turns(record: Mapping[str, Any], count: int) -> dict[str, Any]:
    """The record with only its first `count` turns (e.g. the prompt of a report record) and their spans."""
    trimmed = {**record, "conversations": list(record["conversations"][:count])}
    if SPANS_FIELD in record:
        trimmed[SPANS_FIELD] = [row for row in record[SPANS_FIELD] if row[0] < count]
    return trimmed
