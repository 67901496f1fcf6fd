"""Scores one predictions set (or a baseline) on the three GOU tasks; collects the per-report detail."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from grok.bench.absent import absent_image_quotes, summarise_absent
from grok.bench.bootstrap import bootstrap_ci
from grok.bench.classification import classification_metrics, confusion_counts, multi_hot
from grok.bench.clinical import ClinicalScorer
from grok.bench.diagnosis import DiagnosisParse, parse_diagnosis
from grok.bench.facts import facts_status
from grok.bench.grounding import check_grounding, summarise_grounding
from grok.bench.predictions import Prediction
from grok.bench.references import Reference
from grok.bench.report_quality import EmbeddingSimilarity, MeteorScorer, report_quality
from grok.bench.rubric import DIMENSIONS, FACT_DIMENSIONS, DeterministicRubric
from grok.bench.text import AnalysedText, Vocabulary
from grok.schema.schema import Schema

HEADLINE = ("accuracy", "macro_f1", "rouge_l", "clinical_score", "rubric_total")


@dataclass
class ModelScores:
    """All metrics of one model, plus per-report records and what is needed for plots."""

    model: str
    metrics: dict[str, Any]
    per_report: list[dict[str, Any]]
    confusion: np.ndarray
    issues: list[str] = field(default_factory=list)
    parsed_labels: list[list[str]] = field(default_factory=list)  # the stated diagnosis of each report


class GOUBenchmark:
    """The benchmark over one reference set: call `score(model, predictions)` for each model or baseline."""

    def __init__(
        self,
        references: Sequence[Reference],
        schema: Schema,
        vocabulary: Vocabulary,
        clinical: ClinicalScorer,
        rubric: DeterministicRubric,
        meteor: bool = True,
        embedding: EmbeddingSimilarity | None = None,
        bootstrap_resamples: int = 1000,
        seed: int = 0,
        judge: Any = None,
        image_keys: Mapping[str, frozenset[str]] | None = None,
    ):
        self.references = list(references)
        self.schema = schema
        self.vocabulary = vocabulary
        self.clinical = clinical
        self.rubric = rubric
        self.meteor = MeteorScorer() if meteor else None  # one Java process for every model
        self.embedding = embedding
        self.resamples = bootstrap_resamples
        self.seed = seed
        self.judge = judge
        self.image_keys = dict(image_keys or {})  # image -> keys of the quantities it measures (`image_modalities`)
        self.units = {name: b.unit for name, b in schema.biomarkers.items()}  # the absent-image count's unit check
        self.facts_missing = facts_status(self.references)  # why task 3 cannot be scored; None when it can

    def score(self, model: str, predictions: Sequence[Prediction], issues: Sequence[str] = ()) -> ModelScores:
        """Task 1, 2 and 3 metrics (with bootstrap CIs) of predictions aligned one-to-one with the references."""
        references = self.references
        labels = self.schema.label_names
        records, parsed_labels, grounding = [], [], []
        for reference, prediction in tqdm(
            list(zip(references, predictions, strict=True)), desc=f"scoring {model}", disable=len(references) < 2000
        ):
            analysed = AnalysedText(prediction.text, self.vocabulary)
            parse = parse_diagnosis(analysed)
            parsed_labels.append(list(parse.labels))
            checked = check_grounding(prediction.text, prediction.grounding, reference.facts, self.clinical.tolerance)
            grounding.append(checked)
            record = {
                **self._report_record(reference, analysed, parse),
                "grounding": checked.as_dict(),
                "empty_prediction": not prediction.text.strip(),
            }
            if prediction.images_absent:  # written without an image: what it states of that image's quantities
                record["images_absent"] = list(prediction.images_absent)
                quotes = analysed.quoted_values  # task 3's extraction (cached: task 3 reads the same list)
                record["absent_image_quotes"] = absent_image_quotes(
                    quotes, prediction.images_absent, self.image_keys, self.units
                )
            records.append(record)
        truth = [list(r.labels) for r in references]
        scores = None
        if predictions and all(p.scores is not None for p in predictions):
            scores = np.array([[p.scores[label] for label in labels] for p in predictions], dtype=float)
        metrics: dict[str, Any] = {
            "n_reports": len(references),
            "n_failures": sum(r["empty_prediction"] for r in records),
        }
        metrics["task1"] = classification_metrics(truth, parsed_labels, labels, scores)
        quality = report_quality(
            [p.text for p in predictions], [r.text for r in references], self.meteor, self.embedding
        )
        for key, values in quality.pop("per_report").items():
            for record, value in zip(records, values, strict=True):
                record[key] = value
        metrics["task2"] = quality
        scored = [name for name in DIMENSIONS if self.facts_missing is None or name not in FACT_DIMENSIONS]
        metrics["rubric"] = {name: float(np.mean([r["rubric"][name] for r in records])) for name in scored}
        if self.facts_missing is None:
            metrics["task3"] = self._task3_summary(records)
            metrics["rubric"]["total"] = float(np.mean([r["rubric"]["total"] for r in records]))
        else:
            metrics["not_scored"] = {
                "task3": self.facts_missing,
                "rubric": {"dimensions": [*FACT_DIMENSIONS, "total"], "reason": self.facts_missing},
            }
        if self.judge is not None:
            metrics["judge"] = self.judge.evaluate(references, predictions, parsed_labels)
        metrics["grounding"] = summarise_grounding(grounding)
        if self.facts_missing is not None:
            metrics["grounding"].pop("quotes_by_source")  # needs facts, like task 3
        absent = summarise_absent(records)
        if absent is not None:  # only for predictions carrying `images_absent`
            metrics["absent_image"] = absent
        metrics["ci95"] = self._confidence(truth, parsed_labels, records)
        confusion = confusion_counts(truth, parsed_labels, labels)
        return ModelScores(model, metrics, records, confusion, list(issues), parsed_labels)

    def _report_record(self, reference: Reference, analysed: AnalysedText, parse: DiagnosisParse) -> dict[str, Any]:
        """One report's task-3 detail and rubric points (task 3 and the fact-based rubric items only with facts)."""
        record: dict[str, Any]
        if self.facts_missing is None:
            clinical = self.clinical.score(reference, analysed, parse)
            rubric = self.rubric.score(reference, analysed, clinical)
            record = clinical.as_dict()
        else:
            rubric = self.rubric.score_without_facts(reference, analysed, parse.labels)
            record = {"id": reference.id, "predicted_labels": list(parse.labels), "diagnosis_source": parse.source}
        fact_free = self.facts_missing is not None
        return {**record, "reference_labels": list(reference.labels), "rubric": rubric.as_dict(fact_free)}

    @staticmethod
    def _task3_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
        quotes = [q for r in records for q in r["quotes"]]
        statuses = {}
        for quote in quotes:
            statuses[quote["status"]] = statuses.get(quote["status"], 0) + 1
        mean = lambda key: float(np.mean([float(r[key]) for r in records])) if records else 0.0  # noqa: E731
        return {
            "quantitative_accuracy": mean("quantitative_accuracy"),
            "quotes_per_report": len(quotes) / max(len(records), 1),
            "hallucinated_per_report": mean("hallucinated"),
            "quote_status_counts": statuses,
            "finding_precision": mean("finding_precision"),
            "finding_recall": mean("finding_recall"),
            "finding_f1": mean("finding_f1"),
            "conclusion_consistency": mean("consistent"),
            "conclusion_correct": mean("correct"),
            "clinical_score": mean("score"),
            "flagged_unsupported": sum(bool(r["unsupported_labels"]) for r in records),
        }

    def _confidence(self, truth, predicted, records) -> dict[str, tuple[float, float]]:
        labels = self.schema.label_names
        y_true, y_pred = multi_hot(truth, labels), multi_hot(predicted, labels)
        exact = (y_true == y_pred).all(axis=1).astype(float)
        rouge = np.array([float(r["rouge_l"]) for r in records])

        true_positive = (y_true & y_pred).astype(float)
        false_total = (y_true ^ y_pred).astype(float)  # false positives + false negatives

        def macro_f1(index: np.ndarray) -> float:
            # the same macro-F1 as sklearn's f1_score (classes present in the truth), from resampling weights
            weights = np.bincount(index, minlength=len(records)).astype(float)
            tp, wrong, present = weights @ true_positive, weights @ false_total, (weights @ y_true) > 0
            f1 = np.divide(2 * tp, 2 * tp + wrong, out=np.zeros_like(tp), where=(2 * tp + wrong) > 0)
            return float(f1[present].mean()) if present.any() else 0.0

        statistics = {
            "accuracy": lambda i: float(exact[i].mean()),
            "macro_f1": macro_f1,
            "rouge_l": lambda i: float(rouge[i].mean()),
        }
        if self.facts_missing is None:
            clinical = np.array([float(r["score"]) for r in records])
            totals = np.array([r["rubric"]["total"] for r in records])
            statistics["clinical_score"] = lambda i: float(clinical[i].mean())
            statistics["rubric_total"] = lambda i: float(totals[i].mean())
        return bootstrap_ci(statistics, len(records), self.resamples, seed=self.seed)


def headline(metrics: Mapping[str, Any]) -> dict[str, float | None]:
    """The five headline numbers of a model's metrics (None for what was not scored)."""
    return {
        "accuracy": metrics["task1"]["accuracy"],
        "macro_f1": metrics["task1"]["macro_f1"],
        "rouge_l": metrics["task2"]["rouge_l"],
        "clinical_score": metrics.get("task3", {}).get("clinical_score"),
        "rubric_total": metrics["rubric"].get("total"),
    }
