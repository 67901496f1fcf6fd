"""Task 1 metrics: multi-label aware accuracy, macro-F1, per-class sensitivity/specificity/F1, confusion, AUROC."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import f1_score, multilabel_confusion_matrix, roc_auc_score

UNPARSED = "(none)"


def multi_hot(label_sets: Sequence[Sequence[str]], label_names: Sequence[str]) -> np.ndarray:
    """[N, K] 0/1 matrix of label sets over `label_names`."""
    index = {name: i for i, name in enumerate(label_names)}
    matrix = np.zeros((len(label_sets), len(label_names)), dtype=np.int64)
    for row, labels in enumerate(label_sets):
        for label in labels:
            matrix[row, index[label]] = 1
    return matrix


def classification_metrics(
    truth: Sequence[Sequence[str]],
    predicted: Sequence[Sequence[str]],
    label_names: Sequence[str],
    scores: np.ndarray | None = None,
) -> dict[str, Any]:
    """Accuracy (exact label-set match), macro-F1, per-class sensitivity/specificity/F1 and macro AUROC.

    Multi-label throughout (one-label rows are the special case); a report with no parsable diagnosis predicts no
    label, so it is wrong for every class it should have named. AUROC needs per-class `scores` [N, K] and is the
    mean over classes that have both positives and negatives in the truth.
    """
    y_true, y_pred = multi_hot(truth, label_names), multi_hot(predicted, label_names)
    confusion = multilabel_confusion_matrix(y_true, y_pred)
    per_class = {}
    f1 = f1_score(y_true, y_pred, average=None, zero_division=0)
    for k, name in enumerate(label_names):
        (tn, fp), (fn, tp) = confusion[k]
        per_class[name] = {
            "support": int(tp + fn),
            "sensitivity": float(tp / (tp + fn)) if tp + fn else None,
            "specificity": float(tn / (tn + fp)) if tn + fp else None,
            "f1": float(f1[k]),
        }
    present = [k for k in range(len(label_names)) if y_true[:, k].any()]
    metrics: dict[str, Any] = {
        "accuracy": float((y_true == y_pred).all(axis=1).mean()) if len(y_true) else 0.0,
        "macro_f1": float(np.mean(f1[present])) if present else 0.0,
        "unparsed": int((y_pred.sum(axis=1) == 0).sum()),
        "per_class": per_class,
    }
    if scores is not None:
        both = [k for k in present if not y_true[:, k].all()]
        metrics["auroc"] = float(np.mean([roc_auc_score(y_true[:, k], scores[:, k]) for k in both])) if both else None
    return metrics


def confusion_counts(
    truth: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]], label_names: Sequence[str]
) -> np.ndarray:
    """[K, K+1] counts of (true label, predicted label) pairs; the last column counts reports with no diagnosis.

    For single-label data this is the ordinary confusion matrix; a multi-label row adds one count per pair."""
    index = {name: i for i, name in enumerate(label_names)}
    counts = np.zeros((len(label_names), len(label_names) + 1), dtype=np.int64)
    for true_labels, predicted_labels in zip(truth, predicted, strict=True):
        for true_label in true_labels:
            if not predicted_labels:
                counts[index[true_label], -1] += 1
            for predicted_label in predicted_labels:
                counts[index[true_label], index[predicted_label]] += 1
    return counts


def plot_confusion(counts: np.ndarray, label_names: Sequence[str], title: str, path: Path) -> Path:
    """Save a row-normalised confusion matrix (counts annotated) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = counts.sum(axis=1, keepdims=True)
    normalised = np.divide(counts, rows, out=np.zeros(counts.shape, dtype=float), where=rows > 0)
    figure, axis = plt.subplots(figsize=(7.5, 6))
    axis.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    columns = [*label_names, UNPARSED]
    axis.set_xticks(range(len(columns)), columns, rotation=45, ha="right")
    axis.set_yticks(range(len(label_names)), label_names)
    for i in range(counts.shape[0]):
        for j in range(counts.shape[1]):
            if counts[i, j]:
                colour = "white" if normalised[i, j] > 0.5 else "black"
                axis.text(j, i, str(counts[i, j]), ha="center", va="center", color=colour, fontsize=8)
    axis.set_xlabel("parsed diagnosis")
    axis.set_ylabel("reference label")
    axis.set_title(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
