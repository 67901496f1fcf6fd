"""The paper's 100-point clinical rubric, computed deterministically from the report and `facts`.

Dimension (range): how it is computed here.
- DiagnosisAccuracy (0-20): 20 exact label set and the right eye (or no eye named); 15 exact labels but the other
  eye named; 10 a label of the right family (`label_families`, e.g. Diabetes vs DiabeticRetinopathy); 5 partial
  overlap of label sets; 0 wrong or unparsed. Stage/grade is not in `facts`, so it is not checked.
- QuantitativeAccuracy (0-20): start at 20; per quoted value: 0 within tolerance (10%), -1 when 10-20% off or the
  unit is wrong, -2 when more than 20% off, -3 when the biomarker was never measured (fabricated) or the value lies
  on the other side of the reference range than the measurement (contradicts); floor 0; 0 when no number is quoted.
- QualitativeAccuracy (0-15): 15 x F1 of stated findings (negation-aware) vs `facts.findings`.
- EvidenceGrounding (0-10): 10 x the share of stated findings that are true and whose triggering biomarkers
  (`facts.finding_evidence`) the report names; with no finding stated or true, 10 x the quantitative accuracy.
- ReasoningConsistency (0-15): 15 when the concluded labels are exactly those the KB derives from the report's own
  findings, 8 when every concluded label is supported but one is missed, else 0; -5 per finding the report both
  asserts and denies; floor 0.
- CoverageCompleteness (0-10): +2 per region named (optic disc, macula/fovea, vasculature, periphery/other, OCT
  layers), phrases from config `rubric.coverage_regions`.
- ImageBiomarkerAlignment (0-10): 10 x the share of correct values among the quoted OCT/CFP (image-derived)
  biomarkers; 0 when none is quoted. A text-only proxy: whether the image is seen correctly needs the LLM judge.
- ErrorSeverityPenalty (-15..0): per missed disease label `missed_disease`, per false disease label
  `false_disease`, per fabricated value `fabricated_value` (config), floor -15.

Without `facts` (external references and no `reference_table`) only DiagnosisAccuracy and CoverageCompleteness are
scored; the others (FACT_DIMENSIONS) and the total are reported as not scored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from grok.bench.clinical import ClinicalScore
from grok.bench.references import Reference
from grok.bench.text import AnalysedText
from grok.schema.schema import Schema

DIMENSIONS = {
    "DiagnosisAccuracy": (0, 20),
    "QuantitativeAccuracy": (0, 20),
    "QualitativeAccuracy": (0, 15),
    "EvidenceGrounding": (0, 10),
    "ReasoningConsistency": (0, 15),
    "CoverageCompleteness": (0, 10),
    "ImageBiomarkerAlignment": (0, 10),
    "ErrorSeverityPenalty": (-15, 0),
}
# Dimensions that compare the report with the eye's `facts` (measurements, findings): not scored without them.
FACT_DIMENSIONS = (
    "QuantitativeAccuracy",
    "QualitativeAccuracy",
    "EvidenceGrounding",
    "ReasoningConsistency",
    "ImageBiomarkerAlignment",
    "ErrorSeverityPenalty",
)
QUOTE_DEDUCTIONS = {"correct": 0, "near": 1, "unit_mismatch": 1, "off": 2, "contradicts": 3, "hallucinated": 3}
_EYE = {
    "R": re.compile(r"\b(?:right eye|OD|oculus dexter)\b", re.IGNORECASE),
    "L": re.compile(r"\b(?:left eye|OS|oculus sinister)\b", re.IGNORECASE),
}


@dataclass(frozen=True)
class RubricSettings:
    """Knobs of the deterministic rubric (config key `rubric`)."""

    coverage_regions: Mapping[str, Sequence[str]]
    label_families: Sequence[Sequence[str]] = ()
    missed_disease: float = 5.0
    false_disease: float = 3.0
    fabricated_value: float = 1.0


@dataclass
class RubricScore:
    """The eight rubric dimensions of one report and their total (out of 100)."""

    DiagnosisAccuracy: float = 0.0
    QuantitativeAccuracy: float = 0.0
    QualitativeAccuracy: float = 0.0
    EvidenceGrounding: float = 0.0
    ReasoningConsistency: float = 0.0
    CoverageCompleteness: float = 0.0
    ImageBiomarkerAlignment: float = 0.0
    ErrorSeverityPenalty: float = 0.0

    @property
    def total(self) -> float:
        """Sum of the dimensions (at most 100)."""
        return float(sum(vars(self).values()))

    def as_dict(self, without_facts: bool = False) -> dict[str, float]:
        """Dimensions and total, JSON-ready; `without_facts`: only the dimensions scored without facts, no total."""
        if without_facts:
            return {k: v for k, v in vars(self).items() if k not in FACT_DIMENSIONS}
        return {**vars(self), "total": self.total}


class DeterministicRubric:
    """Computes the rubric from a report's analysis, its task-3 score and the reference."""

    def __init__(self, settings: RubricSettings, schema: Schema):
        self.settings = settings
        self.schema = schema
        self.image_biomarkers = {b.name for b in schema.biomarkers.values() if b.modality in ("oct", "cfp")}
        self.regions = {
            region: re.compile(
                r"\b(?:" + "|".join(re.escape(p).replace(r"\ ", r"[\s\-]+") for p in phrases) + r")", re.IGNORECASE
            )
            for region, phrases in settings.coverage_regions.items()
        }
        self.family = {label: i for i, family in enumerate(settings.label_families) for label in family}

    def diagnosis_accuracy(
        self, predicted: set[str], truth: set[str], analysed: AnalysedText, eye: str | None
    ) -> float:
        """DiagnosisAccuracy points: exact labels and eye 20, exact labels but the other eye 15, same family 10,
        partial overlap 5, else 0."""
        if not predicted:
            return 0.0
        if predicted == truth:
            other = {"R": "L", "L": "R"}.get(eye or "")
            names_other = other is not None and bool(_EYE[other].search(analysed.text))
            names_own = eye is not None and bool(_EYE[eye].search(analysed.text))
            return 15.0 if names_other and not names_own else 20.0
        families = {self.family.get(label, label) for label in predicted}
        if families == {self.family.get(label, label) for label in truth}:
            return 10.0
        return 5.0 if predicted & truth else 0.0

    def score_without_facts(
        self, reference: Reference, analysed: AnalysedText, predicted: Sequence[str]
    ) -> RubricScore:
        """The dimensions that need no `facts` (DiagnosisAccuracy, CoverageCompleteness); the others stay 0 and
        are reported as not scored."""
        rubric = RubricScore()
        if analysed.text.strip():
            rubric.DiagnosisAccuracy = self.diagnosis_accuracy(
                set(predicted), set(reference.labels), analysed, reference.eye
            )
            rubric.CoverageCompleteness = self.coverage(analysed)
        return rubric

    def coverage(self, analysed: AnalysedText) -> float:
        """CoverageCompleteness points: 2 per region named."""
        return 2.0 * sum(bool(p.search(analysed.text)) for p in self.regions.values())

    def score(self, reference: Reference, analysed: AnalysedText, clinical: ClinicalScore) -> RubricScore:
        """All eight dimensions for one report."""
        rubric = RubricScore()
        if not analysed.text.strip():
            return rubric
        predicted, truth = set(clinical.predicted_labels), set(reference.labels)
        rubric.DiagnosisAccuracy = self.diagnosis_accuracy(predicted, truth, analysed, reference.eye)
        if clinical.quotes:
            deductions = sum(QUOTE_DEDUCTIONS[q.status] for q in clinical.quotes)
            rubric.QuantitativeAccuracy = float(max(0, 20 - deductions))
        rubric.QualitativeAccuracy = 15.0 * clinical.finding_f1
        rubric.EvidenceGrounding = self._grounding(reference, analysed, clinical)
        rubric.ReasoningConsistency = self._consistency(analysed, clinical)
        rubric.CoverageCompleteness = self.coverage(analysed)
        image_quotes = [q for q in clinical.quotes if q.biomarker in self.image_biomarkers]
        if image_quotes:
            rubric.ImageBiomarkerAlignment = 10.0 * sum(q.status == "correct" for q in image_quotes) / len(image_quotes)
        normal = self.schema.normal_label
        missed = len((truth - predicted) - {normal})
        false = len((predicted - truth) - {normal})
        fabricated = sum(q.status == "hallucinated" for q in clinical.quotes)
        s = self.settings
        penalty = missed * s.missed_disease + false * s.false_disease + fabricated * s.fabricated_value
        rubric.ErrorSeverityPenalty = -float(min(15.0, penalty))
        return rubric

    @staticmethod
    def _grounding(reference: Reference, analysed: AnalysedText, clinical: ClinicalScore) -> float:
        stated, truth = set(clinical.stated_findings), set(clinical.true_findings)
        if not stated and not truth:
            return 10.0 * clinical.quantitative_accuracy
        if not stated:
            return 0.0
        evidence = reference.facts.get("finding_evidence") or {}
        named = analysed.mentioned_biomarkers()
        grounded = sum(1 for f in stated if f in truth and (set(evidence.get(f, ())) & named or not evidence.get(f)))
        return 10.0 * grounded / len(stated)

    @staticmethod
    def _consistency(analysed: AnalysedText, clinical: ClinicalScore) -> float:
        predicted, derived = set(clinical.predicted_labels), set(clinical.derived_labels)
        if not predicted:
            return 0.0
        if predicted == derived:
            points = 15.0
        elif predicted <= derived and len(derived - predicted) == 1:
            points = 8.0
        else:
            points = 0.0
        contradictions = analysed.stated_findings() & analysed.negated_findings()
        return max(0.0, points - 5.0 * len(contradictions))
