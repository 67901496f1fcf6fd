"""Text analysis shared by every GOU scorer: sentences, negation scope, vocabulary matching, quoted numbers.

The parsers work on free narrative prose as well as on GROK's structured reports. Their vocabulary is never a list
inside the scorer: label synonyms come from the schema, finding phrases from the knowledge base, biomarker phrases
from the schema's display names, abbreviations and `phrases`.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

from grok.schema.units import canonical_unit

# Negation cues (NegEx-style). PRE cues negate the terms that follow them in their scope, POST cues the terms
# before them. "non-" is deliberately absent ("non-proliferative diabetic retinopathy" is a diagnosis).
PRE_NEGATION = (
    r"no|not|without|absence of|absent|free of|negative for|never|neither|nor|rules? out|ruled out|ruling out|"
    r"exclud(?:e|es|ed|ing)|rather than|instead of|unlikely to be|argues? against|arguing against|"
    r"(?:is|are|was|were) not|does not (?:support|suggest|indicate)|do not (?:support|suggest|indicate)|"
    r"did not (?:show|reveal|demonstrate)|lack of|lacks?|less likely|makes? .{0,20}? unlikely|inconsistent with"
)
POST_NEGATION = (
    r"(?:is|are|was|were|seems?|appears?|remains?)\s+(?:\w+\s+)?(?:unlikely|excluded|ruled out|absent|not present|"
    r"not seen|not observed|not supported|not suggested|less likely|not evident|not apparent)|"
    r"(?:can|could|may) be (?:excluded|ruled out)|unlikely|ruled out|excluded|not (?:present|seen|observed|supported)"
)
# Words that end a negation's scope (NegEx termination terms).
SCOPE_TERMINATORS = (
    r"but|however|although|though|yet|whereas|while|except|apart from|aside from|which|nevertheless|instead|"
    r"suggesting|indicating|pointing to"
)
_PRE = re.compile(rf"\b(?:{PRE_NEGATION})\b", re.IGNORECASE)
_POST = re.compile(rf"\b(?:{POST_NEGATION})\b", re.IGNORECASE)
_TERMINATOR = re.compile(rf"\b(?:{SCOPE_TERMINATORS})\b", re.IGNORECASE)
_CLAUSE_END = re.compile(r"[;:]")
# "(normal 220-310 um)", "(threshold 48 mmol/mol)", "(above 300 um)": bounds, not quoted measurements
_REFERENCE_PARENTHESIS = re.compile(
    r"\(\s*(?:normal|ref|reference|range|expected|typical|healthy|nl|threshold|cut-?off|limit|upper|lower|above|below|"
    r">|<|≥|≤)",
    re.IGNORECASE,
)
_COMMA = re.compile(r",")
_LIST_CONTINUATION = re.compile(r"\s*(?:or|and|nor|and/or)\b", re.IGNORECASE)

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(\"'])|\n+")
_ABBREVIATIONS = re.compile(r"\b(?:approx|e\.g|i\.e|vs|cf|Dr|Mr|Mrs|Ms|Fig)\.$", re.IGNORECASE)

NUMBER = r"(?<![\w.])(\d+(?:\.\d+)?)"
UNIT = (
    r"µm|μm|um|microns?|micrometres?|micrometers?|mm\s?hg|mmhg|mmol/mol|mm|millimetres?|millimeters?|nm|%|percent|"
    r"kg/m2|kg/m²|kpa|years?"
)
_QUANTITY = re.compile(rf"{NUMBER}\s*(?:({UNIT})(?![\w/]))?", re.IGNORECASE)
_RANGE_CONTEXT = re.compile(
    r"(?:normal|reference|expected|typical)(?:\s+(?:range|limits?|values?|interval))?\s*(?:is|of|:|=|between|from)?\s*$|"
    r"(?:threshold|cut-?off|limit)(?: of normal)?\s*(?:is|of|at|:|=)?\s*$|"
    r"(?:\d(?:\.\d+)?\s*(?:-|–|to)\s*)$|(?:between\s*)$|"
    r"(?:range\s*(?:of|is)?\s*)$|"
    r"(?:>|<|≥|≤|above|below|under|over|exceeds?|exceeding|less than|more than|greater than)\s*(?:the\s+)?$",
    re.IGNORECASE,
)
_RANGE_TAIL = re.compile(
    r"^\s*(?:-|–|to)\s*\d|^\s*(?:\S+\s+){0,2}?(?:threshold|cut-?off|limit|upper limit|lower limit)\b", re.IGNORECASE
)
_DOWN = (
    r"low|lower|reduced|decreased|thin|thinner|thinned|thinning|below|diminished|attenuated|narrow(?:ed|ing)?|"
    r"depressed|subnormal|sparse|sparser|rarefied|loss|lost"
)
_UP = (
    r"high|higher|raised|elevated|increased|thick|thicker|thickened|thickening|above|enlarged|large|larger|"
    r"greater|prominent|exceeds?|exceeding|excessive|swollen"
)
_DIRECTION = re.compile(rf"\b(?:(?P<down>{_DOWN})|(?P<up>{_UP}))\b", re.IGNORECASE)
_NEGATION_WORD = re.compile(r"\b(?:no|not|without|neither|nor|never)\b|n't\b", re.IGNORECASE)
_BLOOD_PRESSURE = re.compile(r"(?<![\w.])(\d{2,3})\s*/\s*(\d{2,3})(?:\s*(mm\s?hg|mmhg|kpa))?", re.IGNORECASE)


def split_sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) character spans of the sentences of `text` (headers on their own line are sentences too)."""
    spans: list[tuple[int, int]] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        if _ABBREVIATIONS.search(text[start : match.start()]):
            continue
        if text[start : match.start()].strip():
            spans.append((start, match.start()))
        start = match.end()
    if text[start:].strip():
        spans.append((start, len(text)))
    return spans


def _phrase_pattern(phrase: str) -> str:
    """A regex for a vocabulary phrase: hyphens and spaces interchangeable, apostrophes optional, plural 's'."""
    parts = [re.escape(part).replace("'", "['’]?") for part in re.split(r"[\s\-]+", phrase.strip()) if part]
    body = r"[\s\-]+".join(parts)
    is_acronym = phrase.isupper() and len(phrase) <= 6 and " " not in phrase
    body = body if is_acronym else f"(?i:{body})"
    return body


@dataclass(frozen=True)
class Mention:
    """A vocabulary term found in a text: its key (label, finding id or biomarker column) and where."""

    key: str
    start: int
    end: int
    sentence: int
    negated: bool


class TermMatcher:
    """Finds vocabulary terms (longest phrase wins) in text; one matcher per kind of term."""

    def __init__(self, phrases: Mapping[str, Iterable[str]]):
        self.phrases = {
            key: sorted({p for p in values if p and p.strip()}, key=len, reverse=True)
            for key, values in phrases.items()
        }
        entries = [(phrase, key) for key, values in self.phrases.items() for phrase in values]
        entries.sort(key=lambda item: len(item[0]), reverse=True)
        self._group_key = {f"t{index}": key for index, (_, key) in enumerate(entries)}
        # Alternatives are bucketed by first character behind a one-character lookahead, and word boundaries are
        # factored out, so each word start tries only the few phrases that can begin there (about 10x faster).
        buckets: dict[str, list[str]] = defaultdict(list)
        for index, (phrase, _) in enumerate(entries):
            buckets[phrase.strip()[0].lower()].append(f"(?P<t{index}>{_phrase_pattern(phrase)})")
        alternatives = [
            f"(?={re.escape(first)}|{re.escape(first.upper())})(?:{'|'.join(group)})"
            for first, group in buckets.items()
        ]
        pattern = r"(?<![\w\-])(?:" + "|".join(alternatives) + r")(?:e?s)?(?!\w)"
        self._pattern = re.compile(pattern) if alternatives else None

    def find(self, text: str) -> list[tuple[str, int, int]]:
        """(key, start, end) of every non-overlapping term occurrence, left to right."""
        if self._pattern is None:
            return []
        return [(self._group_key[m.lastgroup], m.start(), m.end()) for m in self._pattern.finditer(text)]


def negated_spans(
    sentence: str, term_starts: Sequence[int], cues: tuple[list, list, list, list] | None = None
) -> list[tuple[int, int, int]]:
    """(cue start, scope start, scope end) for every negation cue of `sentence`.

    A pre-negation cue's scope runs forward to the end of its clause: a sentence end, a semicolon or colon, a
    termination word ("but", "however", ...), or a comma that does not continue a list (a list continues when the
    text after the comma starts with a term or with "and"/"or"/"nor"). A post-negation cue ("... is unlikely") covers
    its clause backwards, crossing commas of a list of terms.
    """
    pre, post, hard_ends, commas = cues if cues is not None else sentence_cues(sentence)
    if not pre and not post:
        return []
    starts = set(term_starts)

    def continues_list(comma: int) -> bool:
        rest = sentence[comma + 1 :]
        offset = len(rest) - len(rest.lstrip())
        conjunction = _LIST_CONTINUATION.match(rest)
        if conjunction:
            offset = conjunction.end() + len(rest[conjunction.end() :]) - len(rest[conjunction.end() :].lstrip())
        return (comma + 1 + offset) in starts

    spans = []
    for cue_start, cue_end in pre:
        end = min([e for e in hard_ends if e > cue_end], default=len(sentence))
        for comma in commas:
            if cue_end < comma < end and not continues_list(comma):
                end = comma
                break
        spans.append((cue_start, cue_start, end))
    for cue_start, cue_end in post:
        begin = max([e for e in hard_ends if e < cue_start], default=-1) + 1
        for comma in sorted((c for c in commas if begin <= c < cue_start), reverse=True):
            if not continues_list(comma):
                begin = comma + 1
                break
        spans.append((cue_start, begin, cue_end))
    return spans


def sentence_cues(sentence: str) -> tuple[list, list, list, list]:
    """(pre-negation cue spans, post-negation cue spans, clause ends, comma positions) of one sentence."""
    pre = [m.span() for m in _PRE.finditer(sentence)]
    post = [m.span() for m in _POST.finditer(sentence)]
    if not pre and not post:
        return pre, post, [], []
    hard_ends = [m.start() for m in _CLAUSE_END.finditer(sentence)] + [
        m.start() for m in _TERMINATOR.finditer(sentence)
    ]
    return pre, post, hard_ends, [m.start() for m in _COMMA.finditer(sentence)]


@dataclass(frozen=True)
class QuotedValue:
    """A number quoted in a report and the biomarker it is attached to."""

    biomarker: str
    value: float
    unit: str | None
    sentence: int
    start: int


class Vocabulary:
    """Everything a parser may recognise: label synonyms, finding phrases, biomarker phrases and units."""

    def __init__(
        self,
        label_phrases: Mapping[str, Iterable[str]],
        finding_phrases: Mapping[str, Iterable[str]],
        biomarker_phrases: Mapping[str, Iterable[str]],
        biomarker_units: Mapping[str, str | None],
        normal_label: str,
        measure_names: Iterable[str] = (),
    ):
        self.labels = TermMatcher(label_phrases)
        self.findings = TermMatcher(finding_phrases)
        self.biomarkers = TermMatcher(biomarker_phrases)
        self.biomarker_units = dict(biomarker_units)
        self.normal_label = normal_label
        # continuous measures: a finding phrase that is only such a name ("arteriolar tortuosity") states nothing
        self.measure_names = frozenset(measure_names)
        self.label_names = list(label_phrases)


class AnalysedText:
    """A report split into sentences, with negation-aware term mentions and the numbers it quotes."""

    def __init__(self, text: str, vocabulary: Vocabulary, max_number_distance: int = 60):
        self.text = text
        self.vocabulary = vocabulary
        self.sentences = split_sentences(text)
        self._max_distance = max_number_distance

    @cached_property
    def _cues(self) -> list[tuple[list, list, list, list]]:
        return [sentence_cues(self.text[start:end]) for start, end in self.sentences]

    def _mentions(self, matcher: TermMatcher, negation: bool = True) -> list[Mention]:
        mentions = []
        for index, (start, end) in enumerate(self.sentences):
            sentence = self.text[start:end]
            found = matcher.find(sentence)
            if not found:
                continue
            scopes = negated_spans(sentence, [s for _, s, _ in found], self._cues[index]) if negation else []
            for key, s, e in found:
                negated = any(a <= s and e <= b and not s <= cue < e for cue, a, b in scopes)
                mentions.append(Mention(key, start + s, start + e, index, negated))
        return mentions

    @cached_property
    def label_mentions(self) -> list[Mention]:
        """Every label synonym in the text, with its negation status."""
        return self._mentions(self.vocabulary.labels)

    @cached_property
    def finding_mentions(self) -> list[Mention]:
        """Every knowledge-base finding phrase in the text, with its negation status."""
        return self._mentions(self.vocabulary.findings)

    @cached_property
    def biomarker_mentions(self) -> list[Mention]:
        """Every biomarker name in the text (negation is irrelevant for names: never marked negated)."""
        return self._mentions(self.vocabulary.biomarkers, negation=False)

    def _names_a_measure(self, mention: Mention) -> bool:
        """Whether a finding phrase is only (part of) a measure's name: "arteriolar tortuosity 1.03" names a
        continuous measure, "the drusen count of 0" a lesion count; "numerous drusen" stays a finding."""
        measures = self.vocabulary.measure_names
        for name in self.biomarker_mentions:
            if name.start <= mention.start and mention.end <= name.end:
                longer = (name.end - name.start) > (mention.end - mention.start)
                if name.key in measures or longer:
                    return True
        return False

    def stated_findings(self) -> set[str]:
        """Findings asserted (mentioned outside every negation scope) anywhere in the report. A finding phrase that
        is just the name of a continuous measure ("arteriolar tortuosity 1.03") is a name, not a statement."""
        return {m.key for m in self.finding_mentions if not m.negated and not self._names_a_measure(m)}

    def negated_findings(self) -> set[str]:
        """Findings the report explicitly denies."""
        return {m.key for m in self.finding_mentions if m.negated}

    @cached_property
    def quoted_values(self) -> list[QuotedValue]:
        """Numbers quoted for biomarkers: each value tied to the nearest biomarker name before it in its sentence
        (or just after it when none precedes); reference ranges ("normal 220-310 um") are not quotes."""
        quotes: list[QuotedValue] = []
        by_sentence: dict[int, list[Mention]] = {}
        for mention in self.biomarker_mentions:
            by_sentence.setdefault(mention.sentence, []).append(mention)
        for index, (start, end) in enumerate(self.sentences):
            names = by_sentence.get(index)
            if not names:
                continue
            sentence = self.text[start:end]
            taken: list[tuple[int, int]] = []
            quotes.extend(self._blood_pressure(sentence, start, index, names, taken))
            for match in _QUANTITY.finditer(sentence):
                s = start + match.start()
                if any(a <= match.start() < b for a, b in taken) or self._inside_name(s, names):
                    continue
                window = sentence[max(0, match.start() - 60) : match.start()]
                if _RANGE_CONTEXT.search(window) or _RANGE_TAIL.match(sentence[match.end() : match.end() + 40]):
                    continue
                if self._in_reference_parenthesis(sentence, match.start()):
                    continue
                unit = canonical_unit(match.group(2)) if match.group(2) else None
                if unit == "years":
                    continue
                owner = self._owner(names, s)
                if owner is not None:
                    quotes.append(QuotedValue(owner, float(match.group(1)), unit, index, s))
        return quotes

    def _blood_pressure(self, sentence, offset, index, names, taken) -> list[QuotedValue]:
        keys = {m.key for m in names}
        if not {"sbp_mmhg", "dbp_mmhg"} & keys and not re.search(r"blood pressure|\bBP\b", sentence, re.I):
            return []
        found = []
        for match in _BLOOD_PRESSURE.finditer(sentence):
            unit = canonical_unit(match.group(3)) if match.group(3) else None
            found.append(QuotedValue("sbp_mmhg", float(match.group(1)), unit, index, offset + match.start()))
            found.append(QuotedValue("dbp_mmhg", float(match.group(2)), unit, index, offset + match.start(2)))
            taken.append((match.start(), match.end()))
        return found

    @staticmethod
    def _inside_name(position: int, names: list[Mention]) -> bool:
        return any(m.start <= position < m.end for m in names)

    @staticmethod
    def _in_reference_parenthesis(sentence: str, position: int) -> bool:
        opening = sentence.rfind("(", 0, position)
        if opening < 0 or sentence.rfind(")", 0, position) > opening:
            return False
        return bool(_REFERENCE_PARENTHESIS.match(sentence, opening))

    def _owner(self, names: list[Mention], position: int) -> str | None:
        before = [m for m in names if m.end <= position and position - m.end <= self._max_distance]
        if before:
            return before[-1].key
        after = [m for m in names if m.start > position and m.start - position <= self._max_distance // 3]
        return after[0].key if after else None

    @cached_property
    def direction_statements(self) -> list[tuple[str, str]]:
        """(biomarker, 'up' | 'down') for every qualitative statement about a named biomarker ("the RNFL seems low",
        "a thinned GC-IPL", "enlarged cup-to-disc ratio"); negated statements ("not enlarged") are left out."""
        statements = []
        for mention in self.biomarker_mentions:
            start, end = self.sentences[mention.sentence]
            before = re.split(r"[,;:()]", self.text[max(start, mention.start - 30) : mention.start])[-1]
            after = re.split(
                r"[,;:()]|\b(?:and|but|which|while)\b", self.text[mention.end : min(end, mention.end + 45)]
            )[0]
            if _NEGATION_WORD.search(before):
                continue
            for window in (before, after):
                direction = _DIRECTION.search(window)
                if direction and not _NEGATION_WORD.search(window):
                    statements.append((mention.key, "up" if direction.group("up") else "down"))
                    break
        return statements

    def mentioned_biomarkers(self) -> set[str]:
        """Biomarkers named anywhere in the report."""
        return {m.key for m in self.biomarker_mentions}


def tokens_for_overlap_metrics(text: str) -> str:
    """Lower-cased, punctuation-free, space-joined tokens (the PTB tokenisation the COCO metrics expect, in Python)."""
    text = text.lower().replace("\n", " ")
    words = re.findall(r"\d+(?:\.\d+)?|[a-z0-9µμ]+(?:['’][a-z]+)?|[^\s\w]", text)
    return " ".join(w for w in words if re.search(r"[\wµμ%]", w))
