"""Task 1 parser: a report's final diagnosis as schema labels, from structured reports and narrative prose alike."""

from __future__ import annotations

import re
from dataclasses import dataclass

from grok.bench.text import AnalysedText, Mention

# A section header that opens the conclusion of a structured report ("Conclusion:", "Impression -", "## Diagnosis").
_CONCLUSION_HEADER = re.compile(
    r"^[ \t]*(?:#+[ \t]*|\*\*)?(?:final[ \t]+)?(?:conclusions?|impression|diagnos[ie]s|assessment|summary)(?:\*\*)?"
    r"[ \t]*(?:[:\-–]|$)",
    re.IGNORECASE | re.MULTILINE,
)
_ANY_HEADER = re.compile(r"^[ \t]*(?:#+[ \t]*|\*\*)?[A-Z][A-Za-z /-]{2,40}(?:\*\*)?[ \t]*:", re.MULTILINE)
# Sentences that open the conclusion of a narrative.
_CONCLUSION_CUE = re.compile(
    r"\b(?:in conclusion|in summary|to summari[sz]e|in sum|overall|taken together|altogether|collectively|"
    r"all things considered|final diagnosis|the diagnosis is|most consistent with|most likely|most suggestive of|"
    r"best explained by|impression|we conclude|therefore|thus|hence|favou?rs?|in favou?r of)\b",
    re.IGNORECASE,
)
# Sentences that talk about a disease without asserting it ("glaucoma would typically show an enlarged cup").
_HYPOTHETICAL = re.compile(
    r"\b(?:would|typically|usually|classically|characteristic(?:ally)? of|can be seen|may be seen|"
    r"associated with|such as|differential|alternatives?|if|commonly|often|unlike|in contrast to|"
    r"to (?:consider|distinguish|differentiate))\b",
    re.IGNORECASE,
)

_CLAUSE_BREAK = re.compile(r";|:|\b(?:but|however|whereas|although|though|yet)\b", re.IGNORECASE)


@dataclass(frozen=True)
class DiagnosisParse:
    """The labels a report concludes, and where in the text they were read."""

    labels: tuple[str, ...]
    source: str  # "section" | "conclusion" | "last_assertion" | "all_ruled_out" | "hedged" | "unparsed"

    @property
    def parsed(self) -> bool:
        """Whether any label could be read from the report."""
        return bool(self.labels)


def _conclusion_section(text: str) -> tuple[int, int] | None:
    headers = list(_CONCLUSION_HEADER.finditer(text))
    if not headers:
        return None
    start = headers[-1].start()
    following = [m.start() for m in _ANY_HEADER.finditer(text) if m.start() > headers[-1].end()]
    return start, min(following, default=len(text))


def _clause(analysed: AnalysedText, mention: Mention) -> str:
    """The clause around a mention: its sentence cut at semicolons and contrastive words ("but", "however")."""
    start, end = analysed.sentences[mention.sentence]
    before = _CLAUSE_BREAK.split(analysed.text[start : mention.start])[-1]
    after = _CLAUSE_BREAK.split(analysed.text[mention.end : end])[0]
    return before + analysed.text[mention.start : mention.end] + after


def _asserted(mentions: list[Mention], analysed: AnalysedText, sentences: set[int]) -> list[str]:
    """Labels mentioned positively in assertive sentences among `sentences`, in order of appearance."""
    labels: list[str] = []
    for mention in mentions:
        if mention.negated or mention.sentence not in sentences:
            continue
        clause = _clause(analysed, mention)
        if _HYPOTHETICAL.search(clause) and not _CONCLUSION_CUE.search(clause):
            continue
        if mention.key not in labels:
            labels.append(mention.key)
    return labels


def _resolve(asserted: list[str], mentions: list[Mention], normal: str) -> tuple[str, ...]:
    diseases = [label for label in asserted if label != normal]
    if diseases:
        return tuple(diseases)
    if normal in asserted or (mentions and all(m.negated for m in mentions if m.key != normal)):
        return (normal,)
    return ()


def parse_diagnosis(analysed: AnalysedText) -> DiagnosisParse:
    """The report's final diagnosis as schema label names.

    Order of preference: a conclusion section ("Conclusion:", "Impression:", ...); else, in narrative prose, the
    sentences from the last conclusion cue ("overall", "in summary", "most consistent with", ...) to the end; else
    the last sentence that asserts a disease. Negated diseases ("no signs of glaucoma", "AMD is ruled out") and
    diseases named hypothetically ("glaucoma would typically show ...") are not diagnoses. When every disease the
    report names is ruled out, or it concludes normal/healthy, the label is the schema's normal label.
    """
    normal = analysed.vocabulary.normal_label
    mentions = analysed.label_mentions
    if not analysed.sentences:
        return DiagnosisParse((), "unparsed")
    section = _conclusion_section(analysed.text)
    if section is not None:
        inside = {i for i, (s, e) in enumerate(analysed.sentences) if s < section[1] and e > section[0]}
        # in a section every positive mention counts, hypothetical wording or not
        labels = []
        for mention in mentions:
            if mention.sentence in inside and not mention.negated and mention.key not in labels:
                labels.append(mention.key)
        section_mentions = [m for m in mentions if m.sentence in inside]
        resolved = _resolve(labels, section_mentions, normal)
        if resolved:
            return DiagnosisParse(resolved, "section")
    cues = [i for i, (s, e) in enumerate(analysed.sentences) if _CONCLUSION_CUE.search(analysed.text[s:e])]
    if cues:
        tail = set(range(cues[-1], len(analysed.sentences)))
        resolved = _resolve(_asserted(mentions, analysed, tail), [m for m in mentions if m.sentence in tail], normal)
        if resolved:
            return DiagnosisParse(resolved, "conclusion")
    for index in reversed(range(len(analysed.sentences))):
        diseases = [label for label in _asserted(mentions, analysed, {index}) if label != normal]
        if diseases:
            return DiagnosisParse(tuple(diseases), "last_assertion")
    everywhere = set(range(len(analysed.sentences)))
    resolved = _resolve(_asserted(mentions, analysed, everywhere), mentions, normal)
    if resolved:
        return DiagnosisParse(resolved, "all_ruled_out")
    hedged = [m for m in mentions if not m.negated and m.key != normal]
    if hedged:  # only hedged mentions ("may reflect neurodegeneration, as in Alzheimer's disease"): the last sentence's
        last = hedged[-1].sentence
        return DiagnosisParse(tuple(dict.fromkeys(m.key for m in hedged if m.sentence == last)), "hedged")
    return DiagnosisParse((), "unparsed")
