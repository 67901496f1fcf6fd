"""Text analysis shared by every GOU scorer: sentences, ConText modifiers, vocabulary matching, quoted numbers.

The parsers work on free narrative prose as well as on GROK's structured reports. Their vocabulary is never a list
inside the scorer: label synonyms come from the schema, finding phrases from the knowledge base, biomarker phrases
from the schema's display names, abbreviations and `phrases`.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property

from grok.bench.context import ConText, SentenceContext, load_context_rules
from grok.bench.quantities import Name, QuotedValue, QuoteExtractor

__all__ = ["AnalysedText", "Mention", "QuotedValue", "TermMatcher", "Vocabulary", "split_sentences"]

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(\"'])|\n+")
_ABBREVIATIONS = re.compile(r"\b(?:approx|e\.g|i\.e|vs|cf|Dr|Mr|Mrs|Ms|Fig)\.$", re.IGNORECASE)

_DOWN = (
    r"low|lower|reduced|decreased|thin|thinner|thinned|thinning|below|diminished|attenuated|narrow(?:ed|ing)?|"
    r"depressed|subnormal|sparse|sparser|rarefied|loss|lost"
)
_UP = (
    r"high|higher|raised|elevated|increased|thick|thicker|thickened|thickening|above|enlarged|large|larger|"
    r"greater|prominent|exceeds?|exceeding|excessive|swollen"
)
_DIRECTION = re.compile(rf"\b(?:(?P<down>{_DOWN})|(?P<up>{_UP}))\b", re.IGNORECASE)
_STATEMENT_END = re.compile(r"[;:]|\b(?:but|which|whereas|although|while)\b", re.IGNORECASE)
_NEGATION_WORD = re.compile(r"\b(?:no|not|without|neither|nor|never)\b|n't\b", re.IGNORECASE)


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
    """A regex for a vocabulary phrase: hyphens, dashes and spaces interchangeable, apostrophes optional."""
    parts = [re.escape(part).replace("'", "['’]?") for part in re.split(r"[\s\-–—]+", phrase.strip()) if part]
    body = r"[\s\-–—]+".join(parts)
    is_acronym = phrase.isupper() and len(phrase) <= 6 and " " not in phrase
    body = body if is_acronym else f"(?i:{body})"
    return body


@dataclass(frozen=True)
class Mention:
    """A vocabulary term found in a text: its key (label, finding id or biomarker column), where, and its ConText
    modifiers (`negated`, `possible`, `historical`, `hypothetical`)."""

    key: str
    start: int
    end: int
    sentence: int
    negated: bool
    modifiers: frozenset[str] = frozenset()

    @property
    def hypothetical(self) -> bool:
        """Named without being asserted ("glaucoma would show ...", "AMD was considered")."""
        return "hypothetical" in self.modifiers

    @property
    def historical(self) -> bool:
        """Context about the person ("in a patient with diabetes"), not a finding of this report."""
        return "historical" in self.modifiers


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


class Vocabulary:
    """Everything a parser may recognise: label synonyms, finding phrases, biomarker phrases and units, and the
    ConText rules that say whether a term is asserted."""

    def __init__(
        self,
        label_phrases: Mapping[str, Iterable[str]],
        finding_phrases: Mapping[str, Iterable[str]],
        biomarker_phrases: Mapping[str, Iterable[str]],
        biomarker_units: Mapping[str, str | None],
        normal_label: str,
        measure_names: Iterable[str] = (),
        context: ConText | None = None,
        superseded_by: Mapping[str, Iterable[str]] | None = None,
        qualifiers: Mapping[str, Mapping[str, str]] | None = None,
    ):
        self.labels = TermMatcher(label_phrases)
        self.findings = TermMatcher(finding_phrases)
        self.biomarkers = TermMatcher(biomarker_phrases)
        self.biomarker_units = dict(biomarker_units)
        self.normal_label = normal_label
        # continuous measures: a finding phrase that is only such a name ("arteriolar tortuosity") states nothing
        self.measure_names = frozenset(measure_names)
        self.label_names = list(label_phrases)
        self.context = context or load_context_rules()
        # label -> labels that replace it when both are concluded (the KB's `superseded_by`: DR over Diabetes)
        self.superseded_by = {label: tuple(by) for label, by in (superseded_by or {}).items()}
        self.quotes = QuoteExtractor(
            count_keys=frozenset(k for k, unit in self.biomarker_units.items() if unit == "count"),
            dimensionless_keys=frozenset(k for k, unit in self.biomarker_units.items() if unit == "1"),
            qualifiers=qualifiers or {},
        )


class AnalysedText:
    """A report split into sentences, with ConText-aware term mentions and the numbers it quotes."""

    def __init__(self, text: str, vocabulary: Vocabulary):
        self.text = text
        self.vocabulary = vocabulary
        self.sentences = split_sentences(text)
        self._context: dict[int, SentenceContext] = {}

    def sentence_context(self, index: int) -> SentenceContext:
        """ConText triggers and boundaries of sentence `index` (computed once per sentence)."""
        cached = self._context.get(index)
        if cached is None:
            start, end = self.sentences[index]
            cached = self._context[index] = self.vocabulary.context.sentence(self.text[start:end])
        return cached

    def _mentions(self, matcher: TermMatcher, modifiers: bool = True) -> list[Mention]:
        mentions = []
        context = self.vocabulary.context
        for index, (start, end) in enumerate(self.sentences):
            sentence = self.text[start:end]
            found = matcher.find(sentence)
            if not found:
                continue
            if modifiers:
                kinds = context.modifiers(sentence, [(s, e) for _, s, e in found], self.sentence_context(index))
            else:
                kinds = [frozenset()] * len(found)
            for (key, s, e), kind in zip(found, kinds, strict=True):
                mentions.append(Mention(key, start + s, start + e, index, "negated" in kind, kind))
        return mentions

    @cached_property
    def label_mentions(self) -> list[Mention]:
        """Every label synonym in the text, with its ConText modifiers."""
        return self._mentions(self.vocabulary.labels)

    @cached_property
    def finding_mentions(self) -> list[Mention]:
        """Every knowledge-base finding phrase in the text, with its ConText modifiers."""
        return self._mentions(self.vocabulary.findings)

    @cached_property
    def biomarker_mentions(self) -> list[Mention]:
        """Every biomarker name in the text (negation is irrelevant for names: never marked negated)."""
        return self._mentions(self.vocabulary.biomarkers, modifiers=False)

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
        return {
            m.key
            for m in self.finding_mentions
            if not m.negated and not m.hypothetical and not self._names_a_measure(m)
        }

    def negated_findings(self) -> set[str]:
        """Findings the report explicitly denies."""
        return {m.key for m in self.finding_mentions if m.negated}

    @cached_property
    def quoted_values(self) -> list[QuotedValue]:
        """Numbers quoted for biomarkers, each tied to a schema key (`grok.bench.quantities`); reference ranges,
        thresholds and limits ("normal 220-310 um", "below the 63 µm lower limit") are not quotes."""
        by_sentence: dict[int, list[Name]] = defaultdict(list)
        for m in self.biomarker_mentions:
            start = self.sentences[m.sentence][0]
            by_sentence[m.sentence].append(Name(m.key, m.start - start, m.end - start))
        extractor = self.vocabulary.quotes
        quotes: list[QuotedValue] = []
        for index, (start, end) in enumerate(self.sentences):
            names = by_sentence.get(index)
            if names:
                quotes.extend(extractor.sentence(self.text[start:end], names, index, start))
        return quotes

    @cached_property
    def direction_statements(self) -> list[tuple[str, str]]:
        """(biomarker, 'up' | 'down') for every qualitative statement about a named biomarker ("the RNFL seems low",
        "a thinned GC-IPL", "HbA1c of 58 mmol/mol (7.5%), well above the threshold"); the statement is read up to
        the next biomarker name in the sentence; negated statements ("not enlarged") are left out."""
        statements = []
        names = self.biomarker_mentions
        for i, mention in enumerate(names):
            start, end = self.sentences[mention.sentence]
            previous = names[i - 1].end if i and names[i - 1].sentence == mention.sentence else start
            following = names[i + 1].start if i + 1 < len(names) and names[i + 1].sentence == mention.sentence else end
            before = re.split(r"[,;:()]", self.text[max(previous, mention.start - 30) : mention.start])[-1]
            after = _STATEMENT_END.split(self.text[mention.end : min(following, mention.end + 80)])[0]
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
