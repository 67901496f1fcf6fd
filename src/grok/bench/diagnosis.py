"""Task 1 parser: a report's final diagnosis as schema labels, from structured reports and narrative prose alike."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from grok.bench.text import AnalysedText, Mention

# A section header that opens the conclusion of a structured report ("Conclusion:", "Impression -", "## Diagnosis").
_CONCLUSION_HEADER = re.compile(
    r"^[ \t]*(?:#+[ \t]*|\*\*)?(?:final[ \t]+)?(?:conclusions?|impression|diagnos[ie]s|assessment|summary)(?:\*\*)?"
    r"[ \t]*(?:[:\-–]|$)",
    re.IGNORECASE | re.MULTILINE,
)
_ANY_HEADER = re.compile(r"^[ \t]*(?:#+[ \t]*|\*\*)?[A-Z][A-Za-z /-]{2,40}(?:\*\*)?[ \t]*:", re.MULTILINE)


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


def _asserted(mentions: Iterable[Mention], sentences: set[int]) -> list[str]:
    """Labels asserted in `sentences`, in order of appearance: not negated, not hypothetical, and not context about
    the person ("in a patient with diabetes")."""
    labels: list[str] = []
    for mention in mentions:
        if mention.sentence not in sentences or mention.negated or mention.hypothetical or mention.historical:
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


def _without_superseded(labels: tuple[str, ...], superseded_by: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    """Drop a label that a more specific concluded label supersedes (KB `superseded_by`: DR over Diabetes)."""
    return tuple(label for label in labels if not any(o in labels for o in superseded_by.get(label, ())))


def parse_diagnosis(analysed: AnalysedText) -> DiagnosisParse:
    """The report's final diagnosis as schema label names.

    Order of preference: a conclusion section ("Conclusion:", "Impression:", ...); else, in narrative prose, the
    concluding statement: the sentences from the last one with a conclusion phrase ("overall", "most consistent
    with", "indicates", ... in the ConText rules) to the end; else the last sentence that asserts a disease. ConText
    decides what is asserted: negated diseases ("no signs of glaucoma", "the absence of haemorrhage", "AMD is not
    suspected"), hypothetical ones ("glaucoma would typically show ...", "AMD was considered", "cannot be excluded")
    and context about the person ("in a patient with diabetes") are not diagnoses; hedged diagnoses ("most
    consistent with early glaucomatous optic neuropathy") are stated. When every disease the report names is ruled
    out, or it concludes normal/healthy, the label is the schema's normal label. A label that another concluded label
    supersedes in the knowledge base is dropped.
    """
    parse = _parse(analysed)
    labels = _without_superseded(parse.labels, analysed.vocabulary.superseded_by)
    return parse if labels == parse.labels else DiagnosisParse(labels, parse.source)


def _parse(analysed: AnalysedText) -> DiagnosisParse:
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
        resolved = _resolve(labels, [m for m in mentions if m.sentence in inside], normal)
        if resolved:
            return DiagnosisParse(resolved, "section")
    cue = analysed.vocabulary.context.conclusion
    last_cue = next(
        (i for i in reversed(range(len(analysed.sentences))) if cue.search(analysed.text, *analysed.sentences[i])), None
    )
    if last_cue is not None:
        tail = set(range(last_cue, len(analysed.sentences)))
        tail_mentions = [m for m in mentions if m.sentence in tail]
        resolved = _resolve(_asserted(tail_mentions, tail), tail_mentions, normal)
        if resolved:
            return DiagnosisParse(resolved, "conclusion")
    for index in reversed(range(len(analysed.sentences))):
        diseases = [label for label in _asserted(mentions, {index}) if label != normal]
        if diseases:
            return DiagnosisParse(tuple(diseases), "last_assertion")
    everywhere = set(range(len(analysed.sentences)))
    resolved = _resolve(_asserted(mentions, everywhere), mentions, normal)
    if resolved:
        return DiagnosisParse(resolved, "all_ruled_out")
    hedged = [m for m in mentions if not m.negated and m.key != normal]
    if hedged:  # only hypothetical mentions ("may reflect neurodegeneration, as in Alzheimer's disease"): the last
        last = hedged[-1].sentence
        return DiagnosisParse(tuple(dict.fromkeys(m.key for m in hedged if m.sentence == last)), "hedged")
    return DiagnosisParse((), "unparsed")
