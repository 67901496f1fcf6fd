"""Stage one records where it writes each value (quantity spans); every number of a record is covered by one."""

from __future__ import annotations

import random
import re

import pytest

from grok.grounding.spans import SpanError, mark, spans_by_turn, strip_conversation, strip_marks
from grok.grounding.symbols import QuantityTokens
from grok.knowledge import evaluate_row, load_knowledge_base
from grok.knowledge.instructions import TASKS, EyeCase, InstructionBuilder
from grok.knowledge.writer import ReportWriter, conclude
from knowledge_rows import random_row

KB = load_knowledge_base()
BUILDER = InstructionBuilder(ReportWriter(KB))
TOKENS = QuantityTokens.from_knowledge_base(KB)
NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?")


def test_marks_strip_to_the_plain_text_with_each_numbers_span() -> None:
    text = f"CST {mark('q:macula_central_um', '342')} µm (normal {mark('lo:macula_central_um', '220')}–310 µm)."
    plain, spans = strip_marks(text)
    assert plain == "CST 342 µm (normal 220–310 µm)."
    assert [(plain[s.start : s.end], s.symbol) for s in spans] == [
        ("342", "q:macula_central_um"),
        ("220", "lo:macula_central_um"),
    ]
    with pytest.raises(SpanError, match="unterminated"):
        strip_marks("CST \ue000q:macula_central_um\ue001342")
    with pytest.raises(SpanError, match="does not fit"):
        spans_by_turn([[2, 0, 3, "q:age_years"]], turns=2)


@pytest.mark.parametrize("task", TASKS)
def test_every_number_stage_one_writes_is_a_recorded_span_of_the_right_value(task: str) -> None:
    rng = random.Random(0)
    for index in range(40):
        row = random_row(KB, rng)
        assessment = evaluate_row(row, KB)
        case = EyeCase("S1_R", "R", {"oct": "o.png", "cfp": "c.png"}, (), assessment, conclude(assessment, []))
        style = "narrative" if index % 3 == 0 else "structured"
        turns, rows = strip_conversation(BUILDER.conversation(task, case, style, random.Random(index)))
        by_turn = spans_by_turn(rows, len(turns))
        by_name = assessment.by_name
        for turn, spans in zip(turns, by_turn, strict=True):
            text = turn["value"]
            assert "\ue000" not in text
            starts = {s.start for s in spans}
            assert [m.start() for m in NUMBER.finditer(text)] == sorted(starts)  # no number outside a span
            for span in spans:
                symbol = TOKENS.symbol(span.symbol)  # every symbol is a token of the KB
                number = float(text[span.start : span.end])
                quantity = by_name.get(symbol.key)
                expected = {
                    "value": quantity.value if quantity else row.get(symbol.key),
                    "low": quantity.low if quantity else None,
                    "high": quantity.high if quantity else None,
                    "threshold": symbol.threshold,
                }[symbol.kind]
                decimals = len(text[span.start : span.end].partition(".")[2])
                assert number == pytest.approx(round(expected, decimals)), (span, text)
