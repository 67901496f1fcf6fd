"""Grounded conversations: a record's numbers become quantity tokens, and its value table is built.

Stage-one records carry `quantity_spans`; records without them (instruction files from elsewhere, a user's prompt)
get spans by matching: against the record's `facts` when it has them, else by reading what the prompt states.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from grok.grounding.matching import match_to_values, read_stated_quantities, row_candidates, stated_sex
from grok.grounding.spans import SPANS_FIELD, Span, spans_by_turn
from grok.grounding.symbols import QuantityTokens
from grok.grounding.values import QuantityTable, table_from_facts, table_from_values
from grok.knowledge.base import KnowledgeBase

log = logging.getLogger(__name__)
INPUT_COLUMNS = (None, "all")  # at inference: what the record's table row supplies besides the prompt
USER_ROLES = ("human", "user")


def with_quantity_tokens(text: str, spans: Sequence[Span], tokens: QuantityTokens) -> str:
    """`text` with each span's number replaced by its quantity token ('CST <q:macula_central_um> µm')."""
    pieces, cursor = [], 0
    for span in spans:
        pieces += [text[cursor : span.start], tokens.symbol(span.symbol).token]
        cursor = span.end
    pieces.append(text[cursor:])
    return "".join(pieces)


@dataclass
class ConversationGrounding:
    """How one knowledge base's quantity tokens apply to instruction records."""

    tokens: QuantityTokens
    kb: KnowledgeBase
    tolerance: float = 0.02
    counts: dict[str, int] = field(default_factory=lambda: {"matched_records": 0, "unmatched_numbers": 0})

    def __post_init__(self) -> None:
        from grok.bench.vocabulary import build_vocabulary
        from grok.knowledge.phrasing import biomarker_texts

        self.vocabulary = build_vocabulary(self.kb.schema, self.kb)
        texts = biomarker_texts(self.kb)
        self.names = {k: [texts[k].short, texts[k].display, texts[k].label] for k in texts}

    def spans(self, record: Mapping[str, Any]) -> list[list[Span]]:
        """Spans per turn: the record's own, or found by matching (counted in `counts`)."""
        turns = record["conversations"]
        source = record.get("_source", record.get("id", "?"))
        if SPANS_FIELD in record:
            return spans_by_turn(record[SPANS_FIELD], len(turns), source)
        self.counts["matched_records"] += 1
        facts = record.get("facts") or {}
        found: list[list[Span]] = []
        if facts.get("biomarkers") or facts.get("systemic"):
            table = table_from_facts(facts, self.tokens, self.kb)
            values = {k: float(v) for k, v in zip(self.tokens.keys, table.values, strict=True) if v == v}
            ranges = {
                k: (float(lo), float(hi))
                for k, lo, hi in zip(self.tokens.keys, table.low, table.high, strict=True)
                if lo == lo and hi == hi
            }
            candidates = row_candidates(values, ranges, self.tokens)
            for turn in turns:
                result = match_to_values(_text(turn), candidates, self.names, self.tolerance)
                self.counts["unmatched_numbers"] += len(result.unmatched)
                found.append(result.spans)
            return found
        for turn in turns:  # no row behind the record: read what each user turn states; answers keep their digits
            if _role(turn) in USER_ROLES:
                stated = read_stated_quantities(_text(turn), self.vocabulary, self.tokens)
                self.counts["unmatched_numbers"] += len(stated.unmatched)
                found.append(stated.spans)
            else:
                found.append([])
        return found

    def grounded_turns(self, record: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The record's turns with every stated number replaced by its quantity token."""
        turns = record["conversations"]
        return [
            {**turn, "value": with_quantity_tokens(_text(turn), spans, self.tokens)}
            for turn, spans in zip(turns, self.spans(record), strict=True)
        ]

    def training_table(self, record: Mapping[str, Any]) -> QuantityTable:
        """Every value the record's facts hold (teacher forcing); a record without facts gets what its turns state."""
        facts = record.get("facts") or {}
        if facts.get("biomarkers") or facts.get("systemic"):
            return table_from_facts(facts, self.tokens, self.kb)
        return self.input_table(record)

    def input_table(self, record: Mapping[str, Any], input_columns: str | None = None) -> QuantityTable:
        """What the prompt states (its quantity spans' numbers, the sex its words give) and, with
        `input_columns="all"`, every value of the record's table row (`facts`) as an input too."""
        if input_columns not in INPUT_COLUMNS:
            raise ValueError(f"grounding.input_columns={input_columns!r} is not one of {list(INPUT_COLUMNS)}")
        turns = record["conversations"]
        values: dict[str, float] = {}
        sex = None
        for turn, spans in zip(turns, self.spans(record), strict=True):
            if _role(turn) not in USER_ROLES:
                continue
            text = _text(turn)
            for span in spans:
                symbol = self.tokens.symbol(span.symbol)
                if symbol.kind == "value":
                    values.setdefault(symbol.key, float(text[span.start : span.end]))
            sex = sex or stated_sex(text)
        if input_columns == "all":
            facts = record.get("facts") or {}
            row = {**(facts.get("systemic") or {}), **(facts.get("biomarkers") or {})}
            values.update({k: v for k, v in row.items() if isinstance(v, (int, float))})
            sex = row.get("sex") if isinstance(row.get("sex"), str) else sex
        return table_from_values(values, self.tokens, self.kb, sex=sex)


def _text(turn: Mapping[str, Any]) -> str:
    return str(turn.get("value", turn.get("content", "")))


def _role(turn: Mapping[str, Any]) -> str:
    return str(turn.get("from", turn.get("role")))
