"""Phrasings of the writer: template variants picked by a seeded RNG, and how numbers and units are written."""

from __future__ import annotations

import hashlib
import random
import struct
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from grok.knowledge.base import KnowledgeBase, KnowledgeBaseError

_UNPACK = struct.Struct(">32H").unpack  # a 64-byte BLAKE2b digest -> 32 values in [0, 65536)


class PhraseRng:
    """A small, fast, seedable RNG for phrase choices: the same key gives the same stream on every platform.

    It draws 16-bit values from a chain of BLAKE2b digests of the key (seeding `random.Random` costs ~10 us, as much
    as writing a report line). Anything with a `random()` method (e.g. `random.Random`) works wherever a writer
    takes an RNG.
    """

    __slots__ = ("buffer", "digest")

    def __init__(self, key: str) -> None:
        self.digest = hashlib.blake2b(key.encode()).digest()
        self.buffer = list(_UNPACK(self.digest))

    def random(self) -> float:
        """A float in [0, 1) with 16-bit resolution (plenty to pick among a few variants)."""
        if not self.buffer:
            self.digest = hashlib.blake2b(self.digest).digest()
            self.buffer = list(_UNPACK(self.digest))
        return self.buffer.pop() / 65536.0

    def choice(self, options: tuple | list):
        """One element of `options`."""
        return options[int(self.random() * len(options))]


class Phrasebook:
    """Template variants keyed by dotted names ('status.high'); `pick` chooses one with the caller's RNG."""

    def __init__(self, templates: dict[str, Any], source: str) -> None:
        self.source = source
        self.raw = templates
        self._variants: dict[str, tuple[str, ...]] = {}
        self._flatten(templates, "")

    def _flatten(self, node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                self._flatten(value, f"{prefix}{key}" if not prefix else f"{prefix}.{key}")
        elif isinstance(node, list):
            self._variants[prefix] = tuple(str(item) for item in node)
        else:
            self._variants[prefix] = (str(node),)

    def variants(self, key: str) -> tuple[str, ...]:
        """All variants of `key`; raises naming the template file when the key is absent."""
        try:
            return self._variants[key]
        except KeyError as error:
            raise KnowledgeBaseError(f"{self.source}: missing template key {key!r}") from error

    def choose(self, key: str, rng: random.Random | PhraseRng) -> str:
        """One variant of `key` as a raw template (to fill many times, e.g. one line format for a whole report)."""
        options = self.variants(key)
        return options[0] if len(options) == 1 else options[int(rng.random() * len(options))]

    def pick(self, key: str, rng: random.Random | PhraseRng, **values: Any) -> str:
        """One variant of `key`, chosen by `rng`, with `values` substituted."""
        template = self.choose(key, rng)
        return template.format_map(values) if values else template

    def mapping(self, key: str) -> dict[str, str]:
        """A plain mapping section of the templates (e.g. label_names)."""
        return dict(self.raw.get(key) or {})


@lru_cache(maxsize=8)
def load_phrasebook(path: str | None = None) -> Phrasebook:
    """The package's English phrasings, or a replacement YAML file given by path."""
    file = Path(path) if path else Path(str(resources.files("grok.knowledge").joinpath("templates", "en.yaml")))
    with open(file, encoding="utf-8") as handle:
        return Phrasebook(yaml.safe_load(handle), str(file))


@dataclass(frozen=True)
class BiomarkerText:
    """How one biomarker is named and its values written."""

    name: str
    label: str  # 'central subfield macular thickness (CST)'
    short: str  # 'CST'
    display: str  # 'central subfield macular thickness'
    unit: str  # display unit with a leading space, or ''
    decimals: int
    modality: str
    _ranges: dict[tuple[float | None, float | None], str] = field(default_factory=dict, compare=False, repr=False)

    def value(self, number: float) -> str:
        """'342 µm', '0.45', '1.412'."""
        return f"{number:.{self.decimals}f}{self.unit}"

    def bare(self, number: float) -> str:
        """The number alone, without unit."""
        return f"{number:.{self.decimals}f}"

    def shown(self, number: float, low: float | None = None, high: float | None = None) -> str:
        """The number as a report writes it: `bare`, with one more decimal when rounding would hide that it lies
        outside its range [low, high] (e.g. 86.4 above an upper limit of 86 is written '86.4', not '86')."""
        bound = high if high is not None and number > high else low if low is not None and number < low else None
        text = f"{number:.{self.decimals}f}"
        if bound is not None and text == f"{bound:.{self.decimals}f}":
            return f"{number:.{self.decimals + 1}f}"
        return text

    def range(self, low: float | None, high: float | None) -> str:
        """'220–310 µm' (or '0' for a range of zero width); memoised, ranges repeat across rows."""
        key = (low, high)
        text = self._ranges.get(key)
        if text is None:
            if low is None or high is None:
                text = "not defined"
            elif low == high:
                text = f"{self.bare(low)}{self.unit}"
            else:
                text = f"{self.bare(low)}–{self.bare(high)}{self.unit}"
            self._ranges[key] = text
        return text


@lru_cache(maxsize=16)
def biomarker_texts(kb: KnowledgeBase) -> dict[str, BiomarkerText]:
    """Text helpers of every schema biomarker under this knowledge base."""
    texts = {}
    for b in kb.schema.biomarkers.values():
        unit = kb.unit_display.get(str(b.unit), str(b.unit or "")) if b.unit is not None else ""
        texts[b.name] = BiomarkerText(
            name=b.name,
            label=b.label,
            short=b.abbreviation or b.display,
            display=b.display,
            unit=f" {unit}" if unit else "",
            decimals=kb.decimals_of(b.name),
            modality=b.modality,
        )
    return texts


def join_items(items: list[str], conjunction: str = "and") -> str:
    """'a', 'a and b', 'a, b and c'."""
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} {conjunction} {items[-1]}"


def capitalise(text: str) -> str:
    """First letter upper-cased, the rest untouched."""
    return text[:1].upper() + text[1:]
