"""Task-3 quantity extraction: the numbers a report quotes for biomarkers, each tied to a schema key.

Handles the ways clinicians and LLMs write values: units or none ("0.72", "22 µm", "19.7 micrometres", "7.5%"),
hedges ("approximately", "~", "≈"), blood pressure ("150/92", "153.7 over 97.1 mmHg"), counts before their noun
("13 intraretinal haemorrhages", "eleven drusen"), coordinated names and values ("arteriolar and venular fractal
dimensions of 1.38 and 1.37", "1.35 (arteriolar) and 1.36 (venular)"). Reference ranges, thresholds and limits
("normal 215-300 µm", "below the 63 µm lower limit", "the threshold of 140/90 mmHg"), ages, grades and types are
not quotes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from grok.schema.units import canonical_unit

NUMBER = r"(?<![\w.,])(\d{1,3}(?:,\d{3})+(?!\d)|\d+(?:\.\d+)?)"
UNIT = (
    r"µm|μm|um|microns?|micrometres?|micrometers?|mm\s?hg|mmhg|mmol/mol|mm|millimetres?|millimeters?|nm|%|percent|"
    r"kg/m2|kg/m²|kpa|years?"
)
_QUANTITY = re.compile(rf"{NUMBER}\s*(?:({UNIT})(?![\w/]))?", re.IGNORECASE)
_SPELLED = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
    "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "a single": 1, "a solitary": 1, "single": 1,
}  # fmt: skip
_SPELLED_NUMBER = re.compile(r"\b(" + "|".join(sorted(_SPELLED, key=len, reverse=True)) + r")\b", re.IGNORECASE)
_RANGE_CONTEXT = re.compile(
    r"(?:normal|reference|expected|typical)(?:\s+(?:range|limits?|values?|interval))?\s*(?:is|of|:|=|between|from)?\s*$|"
    r"(?:threshold|cut-?off|limits?)(?: of normal)?\s*(?:is|of|at|:|=)?\s*$|"
    r"(?:\d(?:\.\d+)?\s*(?:-|–|—|to)\s*)$|(?:between\s*)$|"
    r"(?:range\s*(?:of|is)?\s*)$|"
    r"(?:>|<|≥|≤|above|below|under|over|exceeds?|exceeding|less than|more than|greater than)\s*(?:the\s+)?$",
    re.IGNORECASE,
)
_RANGE_TAIL = re.compile(
    r"^\s*(?:-|–|—|to)\s*\d|^\s*(?:\S+\s+)?(?:threshold|cut-?off|limit|upper limit|lower limit)\b", re.IGNORECASE
)
# "65-year-old", "type 2", "grade 1", "stage 3", "6x6": numbers that are not measurements
_NOT_A_VALUE_BEFORE = re.compile(
    r"\b(?:type|grade|stage|class|category|level|step|phase|visit|day|week|month|fig(?:ure)?|table|aged?)\s*$",
    re.IGNORECASE,
)
_NOT_A_VALUE_AFTER = re.compile(r"(?:\s*-\s*|\s+)(?:years?|yrs?|months?)(?:[\s-]+old)?\b|\s*x\s*\d", re.IGNORECASE)
_REFERENCE_PARENTHESIS = re.compile(
    r"\(\s*(?:normal|ref|reference|range|expected|typical|healthy|nl|threshold|cut-?off|limit|upper|lower|above|below|"
    r">|<|≥|≤)",
    re.IGNORECASE,
)
_BLOOD_PRESSURE = re.compile(
    r"(?<![\w.])(\d{2,3}(?:\.\d)?)\s*(?:/|\s+over\s+)\s*(\d{2,3}(?:\.\d)?)(?:\s*(mm\s?hg|mmhg|kpa))?", re.IGNORECASE
)
_BP_WORDS = re.compile(r"blood pressure|\bBP\b|systolic|diastolic", re.IGNORECASE)
_LENGTH_UNITS = frozenset({"um", "mm", "nm"})
_ADJECTIVE = r"(?!(?:and|or|of|with|the|a|an|to|in|at|on|for|is|are|was|were)\b)[a-z][\w\-]*"
# between a count and its noun: up to two adjectives, or two joined by and/or ("12 small and intermediate drusen")
_NAME_GAP = re.compile(rf"\s+(?:{_ADJECTIVE}\s+(?:(?:and|or)\s+{_ADJECTIVE}\s+|{_ADJECTIVE}\s+)?)?$", re.IGNORECASE)
_ADJACENT_QUALIFIER = re.compile(r"^\s*\(?\s*$")
_LIST_GAP = re.compile(r"^\s*(?:,\s*(?:and\s+|or\s+)?|and\s+|or\s+|&\s*)$", re.IGNORECASE)
_VALUE_LIST_GAP = re.compile(r"^\s*(?:,\s*(?:and\s+)?|and\s+)$", re.IGNORECASE)


@dataclass(frozen=True)
class QuotedValue:
    """A number quoted in a report and the biomarker it is attached to."""

    biomarker: str
    value: float
    unit: str | None
    sentence: int
    start: int


@dataclass(frozen=True)
class Name:
    """A biomarker name in a sentence (offsets within the sentence); `qualifier` for a bare "arteriolar"."""

    key: str
    start: int
    end: int
    qualifier: bool = False


@dataclass(frozen=True)
class _Number:
    value: float
    unit: str | None
    start: int
    end: int
    spelled: bool = False


def qualifier_names(sentence: str, names: Sequence[Name], qualifiers: Mapping[str, Mapping[str, str]]) -> list[Name]:
    """Bare qualifiers of a measure named in the sentence ("the arteriolar (1.35) and venular fractal dimensions")
    as names of their own biomarker; `qualifiers` maps a head ("fractal dimension") to qualifier word -> key."""
    found = []
    lowered = sentence.lower()
    for head, words in qualifiers.items():
        if head not in lowered:
            continue
        for word, key in words.items():
            pattern = rf"\b{re.escape(word)}\b(?=\s*(?:\(|\d|and\b|or\b|,|\)|$|{re.escape(head)}))"
            for match in re.finditer(pattern, sentence, re.IGNORECASE):
                if not any(n.start <= match.start() < n.end for n in names):
                    found.append(Name(key, match.start(), match.end(), qualifier=True))
    return found


class QuoteExtractor:
    """Finds quoted values in sentences, given the biomarker names found there."""

    def __init__(
        self,
        count_keys: frozenset[str],
        dimensionless_keys: frozenset[str],
        qualifiers: Mapping[str, Mapping[str, str]],
        max_distance: int = 60,
    ):
        self.count_keys = count_keys
        self.dimensionless_keys = dimensionless_keys
        self.qualifiers = qualifiers
        self.max_distance = max_distance

    def sentence(self, sentence: str, names: Sequence[Name], index: int, offset: int) -> list[QuotedValue]:
        """Every quoted value of one sentence, in order of appearance."""
        names = sorted([*names, *qualifier_names(sentence, names, self.qualifiers)], key=lambda n: n.start)
        taken: list[tuple[int, int]] = []
        quotes = self._blood_pressure(sentence, names, taken)
        numbers = [n for n in self._numbers(sentence, names) if not any(a <= n.start < b for a, b in taken)]
        owners = self._paired(sentence, names, numbers)
        for number in numbers:
            owner = owners.get(number.start) or self._owner(sentence, names, number)
            if owner is None or (number.spelled and owner not in self.count_keys):
                continue
            if number.unit in _LENGTH_UNITS and (owner in self.count_keys or owner in self.dimensionless_keys):
                continue  # "within the central 3 mm" near "drusen": not a count
            quotes.append((owner, number.value, number.unit, number.start))
        quotes.sort(key=lambda q: q[3])
        return [QuotedValue(key, value, unit, index, offset + start) for key, value, unit, start in quotes]

    # ---------------------------------------------------------------------------------------------- numbers
    def _numbers(self, sentence: str, names: Sequence[Name]) -> list[_Number]:
        numbers = []
        bounds: list[_Number] = []
        for match in _QUANTITY.finditer(sentence):
            start = match.start()
            if any(n.start <= start < n.end for n in names):
                continue  # a digit inside a name ("HbA1c")
            unit = canonical_unit(match.group(2)) if match.group(2) else None
            if unit == "years" or _NOT_A_VALUE_AFTER.match(sentence, match.end(1)):
                continue
            if _NOT_A_VALUE_BEFORE.search(sentence, max(0, start - 30), start):
                continue
            end = match.end(2) if match.group(2) else match.end(1)
            number = _Number(float(match.group(1).replace(",", "")), unit, start, end)
            if self._is_bound(sentence, match, bounds):
                bounds.append(number)
                continue
            numbers.append(number)
        for match in _SPELLED_NUMBER.finditer(sentence):
            numbers.append(_Number(float(_SPELLED[match.group(1).lower()]), None, match.start(), match.end(), True))
        return sorted(numbers, key=lambda n: n.start)

    @staticmethod
    def _is_bound(sentence: str, match: re.Match, bounds: list[_Number]) -> bool:
        """A reference range, threshold or limit: by its words, by its parenthesis, or by continuing a list of
        bounds ("lower limits of 21 µm and 60 µm")."""
        start = match.start()
        window = sentence[max(0, start - 60) : start]
        if _RANGE_CONTEXT.search(window) or _RANGE_TAIL.match(sentence[match.end() : match.end() + 40]):
            return True
        opening = sentence.rfind("(", 0, start)
        if opening >= 0 and sentence.rfind(")", 0, start) < opening and _REFERENCE_PARENTHESIS.match(sentence, opening):
            return True
        return bool(bounds) and bool(_VALUE_LIST_GAP.match(sentence[bounds[-1].end : start]))

    def _blood_pressure(self, sentence: str, names: Sequence[Name], taken: list) -> list[tuple]:
        if not any(n.key in ("sbp_mmhg", "dbp_mmhg") for n in names) and not _BP_WORDS.search(sentence):
            return []
        found = []
        for match in _BLOOD_PRESSURE.finditer(sentence):
            taken.append((match.start(), match.end()))
            if _RANGE_CONTEXT.search(sentence[max(0, match.start() - 60) : match.start()]):
                continue  # "below the threshold of 140/90 mmHg"
            unit = canonical_unit(match.group(3)) if match.group(3) else None
            found.append(("sbp_mmhg", float(match.group(1)), unit, match.start()))
            found.append(("dbp_mmhg", float(match.group(2)), unit, match.start(2)))
        return found

    # ---------------------------------------------------------------------------------------------- owners
    def _owner(self, sentence: str, names: Sequence[Name], number: _Number) -> str | None:
        """The name a number belongs to: a count noun or a qualifier right after it ("13 haemorrhages",
        "1.35 (arteriolar)"), else the nearest name before it, else a name just after it."""
        for name in names:
            if name.start < number.end:
                continue
            gap = sentence[number.end : name.start]
            if name.key in self.count_keys and number.unit is None and _NAME_GAP.fullmatch(gap + " "):
                return name.key
            if name.qualifier and _ADJACENT_QUALIFIER.match(gap):
                return name.key
            break
        if number.spelled:
            return None
        before = [n for n in names if n.end <= number.start and number.start - n.end <= self.max_distance]
        if before:
            return before[-1].key
        after = [n for n in names if n.start > number.start and n.start - number.start <= self.max_distance // 3]
        return after[0].key if after else None

    @staticmethod
    def _paired(sentence: str, names: Sequence[Name], numbers: Sequence[_Number]) -> dict[int, str]:
        """Coordinated names followed by as many coordinated values, paired in order ("arteriolar and venular
        fractal dimensions of 1.38 and 1.37", "RNFL and GC-IPL of 18 and 55 µm respectively")."""
        owners: dict[int, str] = {}
        i = 0
        while i < len(names):
            group = [names[i]]
            while i + len(group) < len(names):
                following = names[i + len(group)]
                if not _LIST_GAP.match(sentence[group[-1].end : following.start]):
                    break
                group.append(following)
            i += len(group)
            if len(group) < 2 or len({n.key for n in group}) < len(group):
                continue
            after = [n for n in numbers if n.start >= group[-1].end and not n.spelled]
            following = [n for n in names if n.start >= group[-1].end]
            if len(after) < len(group) or (following and following[0].start < after[0].start):
                continue
            values = [after[0]]
            for number in after[1:]:
                if len(values) == len(group) or not _VALUE_LIST_GAP.match(sentence[values[-1].end : number.start]):
                    break
                values.append(number)
            if len(values) == len(group) and ";" not in sentence[group[-1].end : values[0].start]:
                owners.update({value.start: name.key for value, name in zip(values, group, strict=True)})
        return owners
