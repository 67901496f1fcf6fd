"""The benchmark's thin adapter to the schema and the knowledge base: parser vocabulary and finding directions."""

from __future__ import annotations

import re
from collections import defaultdict

from grok.bench.context import load_context_rules
from grok.bench.text import Vocabulary
from grok.knowledge.base import KnowledgeBase
from grok.schema.schema import Schema

# Biomarker modalities whose values a report can quote (demographics such as age are not scored).
QUOTABLE_MODALITIES = ("oct", "cfp", "systemic", "lesion")


def biomarker_phrases(schema: Schema) -> dict[str, list[str]]:
    """Every way a report may name each quotable biomarker: display name (with and without 'average'/'mean'),
    abbreviation and the schema's `phrases`."""
    phrases: dict[str, list[str]] = {}
    for biomarker in schema.biomarkers.values():
        if biomarker.modality not in QUOTABLE_MODALITIES or biomarker.dtype == "category":
            continue
        names = [biomarker.display, re.sub(r"^(?:average|mean|overall)\s+", "", biomarker.display)]
        if biomarker.abbreviation:
            names.append(biomarker.abbreviation)
        names.extend(biomarker.phrases)
        phrases[biomarker.name] = list(dict.fromkeys(names))
    return phrases


def measure_qualifiers(schema: Schema, phrases: dict[str, list[str]]) -> dict[str, dict[str, str]]:
    """Head noun -> qualifier word -> biomarker, for measure families whose display names differ by their first
    word only ("arteriolar" / "venular" fractal dimension, "systolic" / "diastolic" blood pressure); the words come
    from the display names and the phrases of the family's members."""

    def split(name: str) -> tuple[str, str] | None:
        words = re.sub(r"\s*\(.*?\)", "", name).lower().split()
        return (words[0], " ".join(words[1:])) if len(words) >= 2 and words[0].isalpha() else None

    displays: dict[str, set[str]] = defaultdict(set)
    for key in phrases:
        parts = split(schema.biomarkers[key].display)
        if parts:
            displays[parts[1]].add(key)
    families = {head for head, keys in displays.items() if len(keys) >= 2}
    by_head: dict[str, dict[str, str]] = defaultdict(dict)
    for key, names in phrases.items():
        for name in names:
            parts = split(name)
            if parts and parts[1] in families:
                by_head[parts[1]].setdefault(parts[0], key)
    return dict(by_head)


def build_vocabulary(schema: Schema, kb: KnowledgeBase, context_rules: str | None = None) -> Vocabulary:
    """The parser vocabulary: label synonyms (schema), finding phrases (KB), biomarker phrases and units (schema),
    label supersession (KB) and the ConText rules (`context_rules` file, else the shipped ones)."""
    biomarkers = biomarker_phrases(schema)
    return Vocabulary(
        label_phrases={label.name: [label.name, label.display, *label.synonyms] for label in schema.labels},
        finding_phrases={rule.id: [rule.display, *rule.phrases] for rule in kb.findings.values()},
        biomarker_phrases=biomarkers,
        biomarker_units={name: b.unit for name, b in schema.biomarkers.items()},
        normal_label=schema.normal_label,
        measure_names=[b.name for b in schema.biomarkers.values() if b.modality in ("oct", "cfp", "systemic")],
        context=load_context_rules(context_rules),
        superseded_by={rule.label: rule.superseded_by for rule in kb.diagnoses if rule.superseded_by},
        qualifiers=measure_qualifiers(schema, biomarkers),
    )


def findings_by_direction(kb: KnowledgeBase) -> dict[tuple[str, str], tuple[str, ...]]:
    """(biomarker, 'up' | 'down') -> the KB findings a statement like 'the RNFL seems low' asserts."""
    table: dict[tuple[str, str], list[str]] = defaultdict(list)
    for rule in kb.findings.values():
        for condition in rule.conditions:
            key = (condition.biomarker, "up" if condition.upward else "down")
            if rule.id not in table[key]:
                table[key].append(rule.id)
    return {key: tuple(value) for key, value in table.items()}
