"""Generated token ids -> report text: each quantity token is written from its value, with where it came from.

`<q:k>` is written as the schema writes the value ('262', one more decimal when rounding would hide that it lies
outside its range), preceded by the estimate marker ('≈262') when the read-out head estimated it; `<lo:k>` / `<hi:k>`
as the person's reference bounds and `<t:...>` as the knowledge base's threshold. Every number written is listed with
its value, unit, source and character span (the `grounding` field of a prediction).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from grok.grounding.symbols import QuantityTokens
from grok.grounding.values import SOURCES
from grok.knowledge.base import KnowledgeBase
from grok.knowledge.phrasing import biomarker_texts

NOT_MEASURED = "not measured"  # written where a value token has no value (never a number)


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

    def __init__(self, tokenizer: Any, tokens: QuantityTokens, kb: KnowledgeBase, estimate_marker: str = "≈") -> None:
        self.tokenizer = tokenizer
        self.tokens = tokens
        self.texts = biomarker_texts(kb)
        self.estimate_marker = estimate_marker
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
    ) -> tuple[str, list[QuotedQuantity]]:
        """The text of one sample's generated `ids` and the quantities it quotes (per-key arrays of that sample)."""
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
                if value is None:
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
        return stripped, moved
