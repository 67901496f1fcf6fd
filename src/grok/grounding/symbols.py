"""Quantity tokens: one special token per schema quantity, per reference bound and per fixed knowledge-base threshold.

A grounded conversation never spells a number in digits. Where stage one writes a value it writes a *symbol*:
`q:<key>` for the measured or stated value of schema quantity `key` (e.g. `q:macula_central_um`), `lo:<key>` /
`hi:<key>` for the person's reference bounds of `key` under the knowledge base, and `t:<finding>.<key>` for a fixed
threshold of a knowledge-base rule (e.g. `t:suspicious_optic_disc_cupping.cup_disc_ratio`, 0.7). Each symbol is one
special token `<symbol>` of the tokenizer; its value reaches the language model through the value embedding and comes
back as text through the renderer.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # grok.knowledge's writer marks values with these symbols: no import at run time
    from grok.knowledge.base import KnowledgeBase

KINDS = ("value", "low", "high", "threshold")
_PREFIX = {"value": "q", "low": "lo", "high": "hi", "threshold": "t"}
QUANTITY_DTYPES = ("float", "int")


@dataclass(frozen=True)
class QuantitySymbol:
    """One quantity token: what it stands for and, for a threshold, the knowledge base's number."""

    symbol: str  # 'q:macula_central_um', 'lo:...', 'hi:...', 't:<finding>.<key>'
    kind: str  # value | low | high | threshold
    key: str  # the schema quantity it belongs to
    threshold: float | None = None

    @property
    def token(self) -> str:
        """The tokenizer's special token, e.g. '<q:macula_central_um>'."""
        return f"<{self.symbol}>"


def symbol_of(kind: str, key: str, finding: str | None = None) -> str:
    """The symbol of a value, a reference bound or (with `finding`) a fixed threshold of `key`."""
    if kind not in KINDS:
        raise ValueError(f"quantity symbol kind {kind!r} is not one of {KINDS}")
    if kind == "threshold":
        if not finding:
            raise ValueError("a threshold symbol names its finding")
        return f"t:{finding}.{key}"
    return f"{_PREFIX[kind]}:{key}"


class QuantityTokens:
    """The quantity tokens of one schema and knowledge base, in a fixed order (the order of the token list)."""

    def __init__(self, keys: Sequence[str], symbols: Sequence[QuantitySymbol], image_keys: Mapping[str, Sequence[str]]):
        self.keys = tuple(keys)
        self.symbols = tuple(symbols)
        self.image_keys = {modality: tuple(names) for modality, names in image_keys.items()}
        unknown = {s.key for s in self.symbols} - set(self.keys)
        if unknown:
            raise ValueError(f"quantity symbols name keys outside the quantity list: {sorted(unknown)}")
        if len({s.symbol for s in self.symbols}) != len(self.symbols):
            raise ValueError("quantity symbols must be unique")

    @classmethod
    def from_knowledge_base(
        cls, kb: KnowledgeBase, image_modalities: Mapping[str, Iterable[str]] | None = None
    ) -> QuantityTokens:
        """Every numeric schema quantity (a value token, and bound tokens where the KB has a reference range) and
        every fixed threshold of the KB's finding rules. `image_modalities` maps an image (`oct`, `cfp`) to the
        schema modalities read from it (default: oct <- oct; cfp <- cfp, lesion)."""
        image_modalities = image_modalities or {"oct": ("oct",), "cfp": ("cfp", "lesion")}
        quantities = [b for b in kb.schema.biomarkers.values() if b.dtype in QUANTITY_DTYPES]
        symbols: list[QuantitySymbol] = []
        for biomarker in quantities:
            symbols.append(QuantitySymbol(symbol_of("value", biomarker.name), "value", biomarker.name))
            if kb.reference(biomarker.name) is not None:
                for kind in ("low", "high"):
                    symbols.append(QuantitySymbol(symbol_of(kind, biomarker.name), kind, biomarker.name))
        for rule in kb.findings.values():
            for condition in rule.conditions:
                if condition.uses_reference:
                    continue
                symbol = symbol_of("threshold", condition.biomarker, rule.id)
                if all(s.symbol != symbol for s in symbols):
                    symbols.append(QuantitySymbol(symbol, "threshold", condition.biomarker, float(condition.threshold)))
        image_keys = {
            image: [b.name for b in quantities if b.modality in set(modalities)]
            for image, modalities in image_modalities.items()
        }
        return cls([b.name for b in quantities], symbols, image_keys)

    # ---- lookups ---------------------------------------------------------------------------------------------------
    @cached_property
    def by_symbol(self) -> dict[str, QuantitySymbol]:
        """Symbol -> QuantitySymbol."""
        return {s.symbol: s for s in self.symbols}

    @cached_property
    def key_index(self) -> dict[str, int]:
        """Quantity key -> its position in `keys` (the column of a value table)."""
        return {key: index for index, key in enumerate(self.keys)}

    @property
    def tokens(self) -> list[str]:
        """The special tokens, in symbol order (added to the tokenizer)."""
        return [s.token for s in self.symbols]

    @cached_property
    def image_derived(self) -> frozenset[str]:
        """Keys measured from an image (estimated by the read-out head)."""
        return frozenset(key for keys in self.image_keys.values() for key in keys)

    def symbol(self, token_or_symbol: str) -> QuantitySymbol:
        """The QuantitySymbol of '<q:key>' or 'q:key'; KeyError naming it otherwise."""
        name = token_or_symbol.strip("<>")
        try:
            return self.by_symbol[name]
        except KeyError:
            raise KeyError(f"{token_or_symbol!r} is not a quantity token of this knowledge base") from None

    # ---- persistence (travels with an export) ---------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write the token list as JSON (`quantity_tokens.json` in an export)."""
        payload = {"keys": self.keys, "symbols": [asdict(s) for s in self.symbols], "image_keys": self.image_keys}
        Path(path).write_text(json.dumps(payload, indent=1), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> QuantityTokens:
        """Read a token list written by `save`."""
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(payload["keys"], [QuantitySymbol(**s) for s in payload["symbols"]], payload["image_keys"])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, QuantityTokens) and (self.keys, self.symbols, self.image_keys) == (
            other.keys,
            other.symbols,
            other.image_keys,
        )

    def __hash__(self) -> int:
        return hash((self.keys, self.symbols))
