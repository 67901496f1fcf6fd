"""Generated token ids -> report text: each quantity token is written from its value, with where it came from.

`<q:k>` is written as the schema writes the value ('262', one more decimal when rounding would hide that it lies
outside its range), preceded by the estimate marker ('≈262') when the read-out head estimated it; `<lo:k>` / `<hi:k>`
as the person's reference bounds and `<t:...>` as the knowledge base's threshold. Every number written is listed with
its value, unit, source and character span (the `grounding` field of a prediction).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from itertools import pairwise
from typing import TYPE_CHECKING, Any

from grok.grounding.spans import strip_marks
from grok.grounding.symbols import QuantityTokens
from grok.grounding.values import SOURCES
from grok.knowledge.base import KnowledgeBase
from grok.knowledge.phrasing import PhraseRng, biomarker_texts
from grok.knowledge.writer import ReportWriter, conclude

if TYPE_CHECKING:
    from grok.grounding.findings import Decision

NOT_MEASURED = "not measured"  # written where a value token has no value (never a number)
NOT_ASSESSED = "not assessed"  # written where the image that measures the quantity is absent
WITHHELD_TEXT = "withheld"  # written where the value is a read-out estimate the decided findings reject
SENTENCE_END = re.compile(r"(?<=[.;!?])[ \t]+|\n")  # where absent_lines may cut: after . ; ! ? and a space


def _sentences(text: str) -> list[tuple[int, int]]:
    """The (start, end) spans that cover `text`, each a sentence with the separator that follows it."""
    cuts = [0, *(cut.end() for cut in SENTENCE_END.finditer(text))]
    if cuts[-1] < len(text) or len(cuts) == 1:
        cuts.append(len(text))
    return list(pairwise(cuts))


@dataclass(frozen=True)
class QuotedQuantity:
    """One number a grounded report writes."""

    key: str
    symbol: str
    kind: str  # value | low | high | threshold
    value: float | None
    text: str
    unit: str
    source: str  # input | readout | missing | knowledge_base
    estimate: float | None  # the read-out head's estimate of the quantity (None where it has none)
    start: int
    end: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (NaN-free)."""
        return asdict(self)


def _finite(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


class ReportRenderer:
    """Writes generated ids of one tokenizer as text, quantity tokens from a sample's resolved values."""

    def __init__(
        self,
        tokenizer: Any,
        tokens: QuantityTokens,
        kb: KnowledgeBase,
        estimate_marker: str = "≈",
        writer: ReportWriter | None = None,
        seed: int = 0,
    ) -> None:
        self.tokenizer = tokenizer
        self.tokens = tokens
        self.texts = biomarker_texts(kb)
        self.estimate_marker = estimate_marker
        self.writer = writer
        self.seed = seed
        ids = tokenizer.convert_tokens_to_ids(tokens.tokens)
        self.symbol_of_id = {int(i): s for i, s in zip(ids, tokens.symbols, strict=True)}

    def render(
        self,
        ids: Sequence[int],
        values: Sequence[float],
        sources: Sequence[int],
        low: Sequence[float],
        high: Sequence[float],
        estimates: Sequence[float],
        decision: Decision | None = None,
        record_id: str = "",
    ) -> tuple[str, list[QuotedQuantity]]:
        """The text of one sample's generated `ids` and the quantities it quotes (per-key arrays of that sample).

        With a `decision` (grok.grounding.findings) the generated text is kept up to its qualitative section, which
        the knowledge base's writer writes from the decided findings, with the conclusion they support."""
        pieces: list[str] = []
        quoted: list[QuotedQuantity] = []
        length = 0
        run: list[int] = []

        def flush() -> None:
            nonlocal length
            if run:
                text = self.tokenizer.decode(run, skip_special_tokens=True)
                pieces.append(text)
                length += len(text)
                run.clear()

        for token_id in ids:
            symbol = self.symbol_of_id.get(int(token_id))
            if symbol is None:
                run.append(int(token_id))
                continue
            flush()
            column = self.tokens.key_index[symbol.key]
            text = self.texts[symbol.key]
            estimate = _finite(estimates[column])
            if symbol.kind == "value":
                value = _finite(values[column])
                source = SOURCES[int(sources[column])]
                if source == "withheld":
                    written = WITHHELD_TEXT
                elif source == "absent":
                    written = NOT_ASSESSED
                elif value is None:
                    written = NOT_MEASURED
                else:
                    written = text.shown(value, _finite(low[column]), _finite(high[column]))
                    if source == "readout":
                        written = f"{self.estimate_marker}{written}"
            else:
                value = {"low": _finite(low[column]), "high": _finite(high[column])}.get(symbol.kind, symbol.threshold)
                source = "knowledge_base"
                written = NOT_MEASURED if value is None else text.bare(value)
            pieces.append(written)
            start = length + (len(self.estimate_marker) if written.startswith(self.estimate_marker) else 0)
            length += len(written)
            quoted.append(
                QuotedQuantity(
                    symbol.key,
                    symbol.symbol,
                    symbol.kind,
                    value,
                    written,
                    text.unit.strip(),
                    source,
                    estimate,
                    start,
                    length,
                )
            )
        flush()
        full = "".join(pieces)
        stripped = full.strip()
        shift = len(full) - len(full.lstrip())
        moved = [
            QuotedQuantity(**{**asdict(q), "start": q.start - shift, "end": q.end - shift})
            for q in quoted
            if q.end - shift <= len(stripped)
        ]
        stripped, moved = self.absent_lines(stripped, moved)
        if decision is None:
            return stripped, moved
        text, quoted, _ = self.with_decided_findings(stripped, moved, decision, values, sources, estimates, record_id)
        return text, quoted

    def absent_lines(self, text: str, quoted: list[QuotedQuantity]) -> tuple[str, list[QuotedQuantity]]:
        """Each sentence quoting a quantity whose image is absent rewritten as '<label>: not assessed (no image).'
        (a bullet kept): no unit, status word or range is left to describe a value nobody measured. A sentence is a
        line or a part of one ending in . ; ! or ? before a space, so a one-line paragraph keeps its other
        sentences and their quotes (moved with the text); a rewritten sentence's other quotes go with it."""
        pieces: list[str] = []
        kept: list[QuotedQuantity] = []
        at = 0  # length of the text written so far
        for begin, end in _sentences(text):
            sentence = text[begin:end]
            on_it = [q for q in quoted if begin <= q.start < end]
            absent = list({q.key: q for q in on_it if q.source == "absent" and q.kind == "value"}.values())
            if not absent:
                pieces.append(sentence)
                kept += [QuotedQuantity(**{**asdict(q), "start": q.start - begin + at, "end": q.end - begin + at})
                         for q in on_it]  # fmt: skip
                at += len(sentence)
                continue
            trailing = sentence[len(sentence.rstrip()) :]
            written = "- " if sentence.lstrip().startswith("-") else ""
            for index, quote in enumerate(absent):
                head = f"{'' if index == 0 else ' '}{self.texts[quote.key].label}: "
                where = at + len(written) + len(head)
                kept.append(QuotedQuantity(**{**asdict(quote), "start": where, "end": where + len(NOT_ASSESSED)}))
                written += f"{head}{NOT_ASSESSED} (no image)."
            pieces.append(written + trailing)
            at += len(written + trailing)
        return "".join(pieces), kept

    @property
    def section_headers(self) -> tuple[str, ...]:
        """The headers from which the knowledge base's writer takes over: qualitative findings, conclusion."""
        if self.writer is None:
            return ()
        return tuple(h for key in ("findings_header", "conclusion_header") for h in self.writer.phrases.variants(key))

    def with_decided_findings(
        self,
        text: str,
        quoted: list[QuotedQuantity],
        decision: Decision,
        values: Sequence[float],
        sources: Sequence[int],
        estimates: Sequence[float],
        record_id: str,
    ) -> tuple[str, list[QuotedQuantity], str]:
        """`text` cut at its qualitative section's (or conclusion's) header, then the writer's findings and conclusion
        of `decision`: (the joined text, every quoted quantity of both with its span in it, the writer's section)."""
        if self.writer is None:
            raise ValueError("rendering decided findings needs the ReportRenderer's knowledge-base writer")
        positions = [text.find(h) for h in self.section_headers]
        cut = min((h for h in positions if h >= 0), default=len(text))
        kept = text[:cut].rstrip()
        quoted = [q for q in quoted if q.end <= len(kept)]
        lines = self.writer.qualitative_lines(
            decision.assessment, conclude(decision.assessment, []), PhraseRng(f"{self.seed}:{record_id}")
        )
        in_force = {k: _finite(v) for k, v in zip(self.tokens.keys, values, strict=True)}
        names = {k: SOURCES[int(c)] for k, c in zip(self.tokens.keys, sources, strict=True)}
        offset = len(kept) + 1 if kept else 0
        written, more = render_marked(
            "\n".join(lines), self.tokens, self.texts, in_force, names, estimates, self.estimate_marker, offset
        )
        return (f"{kept}\n{written}" if kept else written), quoted + more, written


def render_marked(
    marked: str,
    tokens: QuantityTokens,
    texts: Mapping[str, Any],
    values: Mapping[str, float],
    sources: Mapping[str, str],
    estimates: Sequence[float],
    estimate_marker: str = "≈",
    offset: int = 0,
) -> tuple[str, list[QuotedQuantity]]:
    """The knowledge-base writer's marked text (grok.grounding.spans) with read-out estimates marked, and every number
    it writes with its value and source (character spans start at `offset`, where the text will stand)."""
    text, spans = strip_marks(marked)
    pieces, quoted, cursor, length = [], [], 0, offset
    for span in spans:
        symbol = tokens.symbol(span.symbol)
        before = text[cursor : span.start]
        pieces.append(before)
        length += len(before)
        number = text[span.start : span.end]
        source = sources[symbol.key] if symbol.kind == "value" else "knowledge_base"
        if source == "readout":
            pieces.append(estimate_marker)
            length += len(estimate_marker)
        pieces.append(number)
        estimate = estimates[tokens.key_index[symbol.key]]
        value = values.get(symbol.key) if symbol.kind == "value" else float(number)
        quoted.append(
            QuotedQuantity(
                symbol.key,
                symbol.symbol,
                symbol.kind,
                None if value is None else float(value),
                number,
                texts[symbol.key].unit.strip(),
                source,
                None if math.isnan(estimate) else float(estimate),
                length,
                length + len(number),
            )
        )
        length += len(number)
        cursor = span.end
    pieces.append(text[cursor:])
    return "".join(pieces), quoted
