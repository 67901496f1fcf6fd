"""The chain-of-thought writer: an engine Assessment -> a three-part structured report or a narrative paragraph."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from grok.grounding.spans import mark
from grok.grounding.symbols import symbol_of
from grok.knowledge.base import Condition, KnowledgeBase
from grok.knowledge.engine import Assessment, Diagnosis, Finding, Quantity
from grok.knowledge.phrasing import Phrasebook, biomarker_texts, capitalise, join_items, load_phrasebook

ABNORMAL = ("low", "high")
MAX_NARRATIVE_NORMALS = 5
MAX_ELIMINATION_BIOMARKERS = 2
MEMO_SIZE = 4096  # findings/assessments whose rendered values are memoised (an eye's records share them)


@dataclass(frozen=True)
class Conclusion:
    """What a report concludes: the diagnoses it states and whether the table's label was supported."""

    diagnoses: tuple[Diagnosis, ...]
    label_supported: bool | None  # None: the table carries no label

    @property
    def labels(self) -> list[str]:
        """Stated label names."""
        return [d.label for d in self.diagnoses]


def conclude(assessment: Assessment, table_labels: Sequence[str]) -> Conclusion:
    """The diagnoses a report states: the table's labels that the engine supports, else the engine's own diagnoses.

    A report never states a diagnosis without a supporting finding. When none of the table's labels is supported by
    the measurements, the report states what the evidence supports (the engine's diagnoses, or normal) and flags the
    uncertainty (`label_supported=False`) instead of asserting the unsupported label.
    """
    engine = {d.label: d for d in assessment.diagnoses}
    if not table_labels:
        return Conclusion(assessment.diagnoses, None)
    supported = tuple(engine[label] for label in table_labels if label in engine)
    if supported:
        return Conclusion(supported, True)
    return Conclusion(assessment.diagnoses, False)


class ReportWriter:
    """Renders assessments as text with phrasings from a Phrasebook chosen by the caller's seeded RNG."""

    def __init__(self, kb: KnowledgeBase, phrasebook: Phrasebook | None = None) -> None:
        self.kb = kb
        self.phrases = phrasebook or load_phrasebook()
        self.texts = biomarker_texts(kb)
        self.normal_label = kb.schema.normal_label
        names = self.phrases.mapping("label_names")
        short = self.phrases.mapping("label_short_names")
        displays = {label.name: label.display for label in kb.schema.labels}
        self.label_names = {name: names.get(name, displays[name]) for name in displays}
        self.label_short = {name: short.get(name, self.label_names[name]) for name in displays}
        self.core = frozenset(kb.core_biomarkers)
        # text shared by an eye's records, keyed by object id (the object is kept in the entry so ids stay unique)
        self._memo: dict[int, tuple[object, list]] = {}
        self.conditions: dict[tuple[str, str], Condition] = {}
        for rule in kb.findings.values():
            for condition in rule.conditions:
                self.conditions.setdefault((rule.id, condition.biomarker), condition)

    # ------------------------------------------------------------------------------------------ shared pieces
    def listed_quantities(self, assessment: Assessment) -> list[Quantity]:
        """The quantities a report lists, in schema order: the KB's core set, every biomarker behind a finding, and
        the `max_extra_abnormal` other abnormal ones that lie furthest outside their range (relative to its width).
        Memoised per assessment (an eye's records share it); keyed by its quantities tuple, as the assessment itself
        keys the rendered rows."""
        memo = self._memo.get(id(assessment.quantities))
        if memo is None or memo[0] is not assessment.quantities:
            memo = self._remember(assessment.quantities, self._listed_quantities(assessment))
        return memo[1]

    def _listed_quantities(self, assessment: Assessment) -> list[Quantity]:
        cited = {name for finding in assessment.findings for name in finding.biomarkers}
        extra = [
            q for q in assessment.quantities if q.status in ABNORMAL and q.name not in self.core and q.name not in cited
        ]
        if len(extra) > self.kb.max_extra_abnormal:
            extra = sorted(extra, key=_relative_deviation, reverse=True)[: self.kb.max_extra_abnormal]
        keep = self.core | cited | {q.name for q in extra}
        return [q for q in assessment.quantities if q.name in keep]

    # Every number is written through `number`, `value`, `range_text` or `threshold`, which mark it with its quantity
    # symbol (grok.grounding.spans): stage one records where each value stands in the text.
    def number(self, name: str, value: float, low: float | None = None, high: float | None = None) -> str:
        """The marked bare number of quantity `name` ('342'), as `BiomarkerText.shown` writes it."""
        return mark(symbol_of("value", name), self.texts[name].shown(value, low, high))

    def value(self, quantity: Quantity) -> str:
        """The quantity's value with its unit ('342 µm'); one more decimal when rounding would hide that it lies
        outside its range (e.g. 86.4 µm above an upper limit of 86 µm)."""
        return self.number(quantity.name, quantity.value, quantity.low, quantity.high) + self.texts[quantity.name].unit

    def range_text(self, quantity: Quantity) -> str:
        """The quantity's reference range for this person, '215–300 µm' (a single bound when low equals high)."""
        text = self.texts[quantity.name]
        if quantity.low is None or quantity.high is None:
            return text.range(quantity.low, quantity.high)
        high = mark(symbol_of("high", quantity.name), text.bare(quantity.high))
        if quantity.low == quantity.high:
            return f"{high}{text.unit}"
        return f"{mark(symbol_of('low', quantity.name), text.bare(quantity.low))}–{high}{text.unit}"

    def threshold(self, finding_id: str, quantity: Quantity) -> tuple[str, str]:
        """(comparison kind, threshold text) of the rule condition that `quantity` triggered for this finding."""
        condition = self.conditions[(finding_id, quantity.name)]
        text = self.texts[quantity.name]
        if condition.uses_reference:
            kind, number = ("high", quantity.high) if condition.upward else ("low", quantity.low)
            symbol = symbol_of(kind, quantity.name)
        else:
            number = condition.threshold
            kind = {"above": "high", "below": "low"}.get(condition.operator, condition.operator)
            symbol = symbol_of("threshold", quantity.name, finding_id)
        return kind, mark(symbol, text.bare(number)) + text.unit

    def evidence_items(
        self, finding: Finding, by_name: dict[str, Quantity], rng: random.Random, key: str = "evidence_item"
    ) -> list[str]:
        """One short citation per triggering biomarker: 'CST 342 µm (above 310 µm)' (template group `key`)."""
        items = []
        for short, value, kind, threshold in self._citations(finding, by_name):
            items.append(self.phrases.pick(f"{key}.{kind}", rng, short=short, value=value, threshold=threshold))
        return items

    def _citations(self, finding: Finding, by_name: dict[str, Quantity]) -> list[tuple[str, str, str, str]]:
        """(short name, value, comparison kind, threshold) per triggering biomarker, memoised per finding."""
        memo = self._memo.get(id(finding))
        if memo is None or memo[0] is not finding:
            citations = []
            for name in finding.biomarkers:
                quantity = by_name[name]
                kind, threshold = self.threshold(finding.id, quantity)
                citations.append((self.texts[name].short, self.value(quantity), kind, threshold))
            memo = self._remember(finding, citations)
        return memo[1]

    def _quantity_rows(self, assessment: Assessment) -> list[tuple[str, str | None, str, str]]:
        """(label, value, range, status) of the listed quantities, memoised per assessment (shared by its records)."""
        memo = self._memo.get(id(assessment))
        if memo is None or memo[0] is not assessment:
            texts = self.texts
            rows = []
            for q in self.listed_quantities(assessment):
                text = texts[q.name]
                value = None if q.value is None else self.value(q)
                rows.append((text.label, value, self.range_text(q), q.status))
            memo = self._remember(assessment, rows)
        return memo[1]

    def _remember(self, key_object: object, value: list) -> tuple[object, list]:
        memo = self._memo[id(key_object)] = (key_object, value)
        if len(self._memo) > MEMO_SIZE:
            self._memo.pop(next(iter(self._memo)))
        return memo

    def finding_display(self, finding_id: str) -> str:
        """Display text of a finding."""
        return self.kb.findings[finding_id].display

    def diagnoses_text(self, diagnoses: Sequence[Diagnosis]) -> str:
        """'glaucoma and systemic hypertension'."""
        return join_items([self.label_names[d.label] for d in diagnoses])

    def support_text(
        self,
        diagnoses: Sequence[Diagnosis],
        by_name: dict[str, Quantity],
        findings: dict[str, Finding],
        rng: random.Random,
    ) -> str:
        """Supporting findings with their evidence, e.g. 'suspicious optic disc cupping (VCDR 0.78 ...)'."""
        ids = list(dict.fromkeys(f for d in diagnoses for f in d.findings))
        parts = []
        for finding_id in ids:
            evidence = "; ".join(self.evidence_items(findings[finding_id], by_name, rng, "evidence_inline"))
            parts.append(f"{self.finding_display(finding_id)} ({evidence})")
        return join_items(parts)

    def normals_text(self, assessment: Assessment) -> str:
        """The core quantities that are normal, with values: 'CST 262 µm, GC-IPL 78 µm ...'."""
        items = [
            f"{self.texts[q.name].short} {self.value(q)}"
            for q in assessment.quantities
            if q.name in self.core and q.status == "normal"
        ]
        return ", ".join(items) + " within normal ranges" if items else "no abnormal measurement"

    def conclusion_sentence(self, assessment: Assessment, conclusion: Conclusion, rng: random.Random) -> str:
        """The conclusion: stated diagnoses with their support, incidental findings, and any uncertainty."""
        stated = [d for d in conclusion.diagnoses if d.label != self.normal_label]
        if stated:
            support = join_items(list(dict.fromkeys(self.finding_display(f) for d in stated for f in d.findings)))
            diagnoses = self.diagnoses_text(stated)
            sentence = self.phrases.pick(
                "conclusion", rng, diagnoses=diagnoses, diagnoses_cap=capitalise(diagnoses), support=support
            )
        else:
            sentence = self.phrases.pick("conclusion_normal", rng)
        used = {f for d in stated for f in d.findings}
        incidental = [self.finding_display(f.id) for f in assessment.findings if f.id not in used]
        if incidental:
            plural = len(incidental) > 1
            sentence += " " + self.phrases.pick(
                "incidental",
                rng,
                findings=capitalise(join_items(incidental)),
                verb="are" if plural else "is",
                pronoun="their" if plural else "its",
            )
        if conclusion.label_supported is False:
            sentence += " " + self.phrases.pick("uncertain", rng)
        return sentence

    # ------------------------------------------------------------------------------------------ structured
    def structured(self, assessment: Assessment, conclusion: Conclusion, rng: random.Random) -> str:
        """The three-part report: Quantitative analysis, Qualitative findings, Conclusion."""
        lines = self.quantitative_lines(assessment, rng)
        return "\n".join([*lines, *self.qualitative_lines(assessment, conclusion, rng)])

    def quantitative_lines(self, assessment: Assessment, rng: random.Random) -> list[str]:
        """The quantitative section: its header and one line per listed quantity."""
        choose = self.phrases.choose
        lines = [choose("quantitative_header", rng)]
        # one line format and one status vocabulary per report: varied across reports, consistent within one
        line, missing = choose("quantity_line", rng), choose("missing_line", rng)
        status_words = {status: choose(f"status.{status}", rng) for status in ("low", "normal", "high")}
        for label, value, value_range, status in self._quantity_rows(assessment):
            if status == "withheld":
                lines.append(self.phrases.pick("withheld_line", rng, name=label))
            elif value is None:
                lines.append(missing.format(name=label))
            else:
                lines.append(line.format(name=label, value=value, range=value_range, status=status_words[status]))
        return lines

    def qualitative_lines(self, assessment: Assessment, conclusion: Conclusion, rng: random.Random) -> list[str]:
        """The qualitative findings (each with the values that reach its threshold) and the conclusion."""
        pick = self.phrases.pick
        by_name = assessment.by_name
        lines = [pick("findings_header", rng)]
        for finding in assessment.findings:
            display = self.finding_display(finding.id)
            evidence = "; ".join(self.evidence_items(finding, by_name, rng))
            template = "finding_line" if evidence else "finding_line_image"
            lines.append(
                pick(
                    template,
                    rng,
                    display=capitalise(display),
                    display_lower=display,
                    severity=finding.severity,
                    severity_cap=capitalise(finding.severity),
                    evidence=evidence,
                )
            )
        if not assessment.findings:
            lines.append(pick("no_finding_line", rng))
        lines.append(f"{pick('conclusion_header', rng)} {self.conclusion_sentence(assessment, conclusion, rng)}")
        return lines

    # ------------------------------------------------------------------------------------------ narrative
    def narrative(
        self, assessment: Assessment, conclusion: Conclusion, rng: random.Random, eye: str, person: str, age: str
    ) -> str:
        """One evidence-based paragraph: numbers tied to findings, normal features, eliminations, conclusion."""
        pick = self.phrases.pick
        by_name = assessment.by_name
        systemic = self.systemic_items(by_name)
        opening_systemic = pick("narrative_systemic", rng, items=join_items(systemic)) if systemic else ""
        sentences = [pick("narrative_opening", rng, age=age, person=person, eye=eye, systemic=opening_systemic)]
        cited: set[str] = set()
        for finding in assessment.findings:
            sentences.append(self._narrative_finding(finding, by_name, rng))
            cited.update(finding.biomarkers)
        if not assessment.findings:
            sentences.append(pick("narrative_no_findings", rng))
        normals = [
            f"{self.texts[q.name].display} of {self.value(q)}"
            for q in assessment.quantities
            if q.name in self.core
            and q.status == "normal"
            and q.name not in cited
            and self.texts[q.name].modality != "systemic"
        ][:MAX_NARRATIVE_NORMALS]
        if normals:
            key = "narrative_normals" if len(normals) > 1 else "narrative_normal_single"
            sentences.append(pick(key, rng, items=join_items(normals)))
        missing = [
            self.texts[q.name].display
            for q in assessment.quantities
            if q.name in self.core and q.status == "unavailable"
        ]
        if missing:
            plural = len(missing) > 1
            sentences.append(
                pick(
                    "narrative_missing",
                    rng,
                    items=join_items(missing),
                    verb="are" if plural else "is",
                    pronoun="they" if plural else "it",
                )
            )
        sentences.extend(self._eliminations(assessment, conclusion, by_name, rng))
        stated = [d for d in conclusion.diagnoses if d.label != self.normal_label]
        if stated:
            sentences.append(pick("narrative_conclusion", rng, diagnoses=self.diagnoses_text(stated)))
        else:
            sentences.append(pick("narrative_conclusion_normal", rng))
        if conclusion.label_supported is False:
            sentences.append(pick("uncertain", rng))
        return " ".join(sentences)

    def systemic_items(self, by_name: dict[str, Quantity]) -> list[str]:
        """Systemic values as narrative phrases: 'a blood pressure of 150/92 mmHg', 'an HbA1c of 52 mmol/mol'."""
        items = []
        sbp, dbp = by_name.get("sbp_mmhg"), by_name.get("dbp_mmhg")
        if sbp and dbp and sbp.value is not None and dbp.value is not None:
            items.append(f"a blood pressure of {self.number('sbp_mmhg', sbp.value)}/{self.value(dbp)}")
        hba1c = by_name.get("hba1c_mmol_mol")
        if hba1c and hba1c.value is not None:
            items.append(f"an HbA1c of {self.value(hba1c)}")
        return items

    def _narrative_finding(self, finding: Finding, by_name: dict[str, Quantity], rng: random.Random) -> str:
        pick = self.phrases.pick
        first, *rest = finding.biomarkers
        kind, threshold = self.threshold(finding.id, by_name[first])
        text = self.texts[first]
        sentence = pick(
            "narrative_finding",
            rng,
            place=pick(f"narrative_place.{text.modality}", rng),
            name=text.display,
            value=self.value(by_name[first]),
            comparison=pick(f"narrative_comparison.{kind}", rng),
            threshold=threshold,
            severity=finding.severity,
            display_lower=self.finding_display(finding.id),
        )
        for name in rest:
            kind, threshold = self.threshold(finding.id, by_name[name])
            sentence = (
                sentence[:-1]
                + pick(
                    "narrative_finding_more",
                    rng,
                    name=self.texts[name].display,
                    value=self.value(by_name[name]),
                    comparison=pick(f"narrative_comparison.{kind}", rng),
                    threshold=threshold,
                )
                + "."
            )
        return sentence

    def _eliminations(
        self, assessment: Assessment, conclusion: Conclusion, by_name: dict[str, Quantity], rng: random.Random
    ) -> list[str]:
        """One sentence per label the evidence rules out, naming the measurements that argue against it."""
        present = frozenset(assessment.finding_ids)
        engine_labels = set(assessment.labels) | set(conclusion.labels)
        sentences = []
        seen: set[str] = set()
        for rule in self.kb.diagnoses:
            if rule.label in engine_labels or rule.label in seen:
                continue
            seen.add(rule.label)
            label = self.label_short[rule.label]
            blocking = [f for f in rule.none_of if f in present]
            missing_required = [f for f in rule.all_of if f not in present]
            if rule.any_of and not any(f in present for f in rule.any_of):
                missing_required.extend(rule.any_of)
            if not missing_required:
                if blocking:  # otherwise the rule is met but superseded (e.g. diabetes within diabetic retinopathy)
                    findings = join_items([self.finding_display(f) for f in blocking])
                    sentences.append(
                        self.phrases.pick("narrative_elimination_blocked", rng, findings=findings, label=label)
                    )
                continue
            names = list(dict.fromkeys(b for f in missing_required for b in self.kb.findings[f].biomarkers))
            available = [by_name[n] for n in names if by_name[n].value is not None][:MAX_ELIMINATION_BIOMARKERS]
            if available:
                evidence = join_items([f"the {self.texts[q.name].short} of {self.value(q)}" for q in available])
                singular = len(available) == 1
                sentences.append(
                    self.phrases.pick(
                        "narrative_elimination",
                        rng,
                        evidence=evidence,
                        Evidence=capitalise(evidence),
                        argues="argues" if singular else "argue",
                        s="s" if singular else "",
                        label=label,
                    )
                )
            else:
                evidence = join_items([self.texts[n].short for n in names[:MAX_ELIMINATION_BIOMARKERS]])
                sentences.append(
                    self.phrases.pick(
                        "narrative_elimination_missing", rng, evidence=f"a measured {evidence}", label=label
                    )
                )
        return sentences


def _relative_deviation(quantity: Quantity) -> float:
    """How far a value lies outside its range, in range widths (0 inside)."""
    width = (quantity.high - quantity.low) or 1.0
    if quantity.value > quantity.high:
        return (quantity.value - quantity.high) / width
    return (quantity.low - quantity.value) / width
