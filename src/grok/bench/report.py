"""Benchmark outputs: metrics.json, a Markdown table with the models side by side, per-report JSONL, plots."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from grok.bench.classification import plot_confusion
from grok.bench.rubric import DIMENSIONS
from grok.bench.runner import HEADLINE, ModelScores

ROWS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("Task 1", "Accuracy (exact label set)", ("task1", "accuracy")),
    ("Task 1", "Macro-F1", ("task1", "macro_f1")),
    ("Task 1", "AUROC (when scores given)", ("task1", "auroc")),
    ("Task 1", "Unparsed diagnoses", ("task1", "unparsed")),
    ("Task 2", "BLEU-1", ("task2", "bleu_1")),
    ("Task 2", "BLEU-4", ("task2", "bleu_4")),
    ("Task 2", "ROUGE-L", ("task2", "rouge_l")),
    ("Task 2", "METEOR", ("task2", "meteor")),
    ("Task 2", "CIDEr", ("task2", "cider")),
    ("Task 2", "Embedding F1 (MiniLM)", ("task2", "embedding_f1")),
    ("Task 3", "Quantitative accuracy", ("task3", "quantitative_accuracy")),
    ("Task 3", "Hallucinated values / report", ("task3", "hallucinated_per_report")),
    ("Task 3", "Finding F1", ("task3", "finding_f1")),
    ("Task 3", "Conclusion consistent with own findings", ("task3", "conclusion_consistency")),
    ("Task 3", "Conclusion correct", ("task3", "conclusion_correct")),
    ("Task 3", "Clinical score (mean of the four above)", ("task3", "clinical_score")),
    ("Grounding", "Free-typed numbers / report", ("grounding", "free_typed_per_report")),
    ("Grounding", "Quoted values correct: stated inputs", ("grounding", "quotes_by_source", "input", "accuracy")),
    ("Grounding", "Quoted values correct: read-out", ("grounding", "quotes_by_source", "readout", "accuracy")),
    ("Grounding", "Quoted values correct: KB ranges", ("grounding", "quotes_by_source", "knowledge_base", "accuracy")),
    ("Grounding", "Diagnosis changed with another eye's images", ("input_reliance", "changed")),
    ("Absent image", "Reports written without an image", ("absent_image", "reports")),
    ("Absent image", "Values stated for the absent image (target 0)", ("absent_image", "quantities_stated")),
    ("Absent image", "Reports stating such a value (target 0)", ("absent_image", "reports_stating")),
    ("Rubric", "Deterministic rubric total (/100)", ("rubric", "total")),
    *(("Rubric", name, ("rubric", name)) for name in DIMENSIONS),
    ("Judge", "LLM rubric total (/100)", ("judge", "rubric", "total")),
    ("Judge", "LLM-extracted label macro-F1", ("judge", "labels", "macro_f1")),
    ("Judge", "Parser-judge label agreement", ("judge", "parser_agreement")),
)
_CI_KEYS = {
    ("task1", "accuracy"): "accuracy",
    ("task1", "macro_f1"): "macro_f1",
    ("task2", "rouge_l"): "rouge_l",
    ("task3", "clinical_score"): "clinical_score",
    ("rubric", "total"): "rubric_total",
}


def _lookup(metrics: dict[str, Any], path: Sequence[str]) -> Any:
    value: Any = metrics
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def _cell(metrics: dict[str, Any], path: tuple[str, ...]) -> str:
    value = _lookup(metrics, path)
    if value is None:
        return "–"
    points = path[0] == "rubric" or path[-1] == "total"  # rubric points: one decimal
    digits = 1 if points else 3
    text = str(value) if isinstance(value, int) else f"{value:.{digits}f}"
    ci = metrics.get("ci95", {}).get(_CI_KEYS.get(path, ""))
    if ci:
        text += f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"
    return text


def markdown_table(results: Sequence[ModelScores]) -> str:
    """Metrics as rows, models side by side as columns, bootstrap 95% CIs in brackets for the headline metrics."""
    header = "| Task | Metric | " + " | ".join(r.model for r in results) + " |"
    lines = [header, "|" + "---|" * (len(results) + 2)]
    for task, name, path in ROWS:
        cells = [_cell(r.metrics, path) for r in results]
        if all(c == "–" for c in cells):
            continue
        lines.append(f"| {task} | {name} | " + " | ".join(cells) + " |")
    notes = [
        f"- `{r.model}`: {r.metrics['n_failures']} of {r.metrics['n_reports']} eyes had no usable prediction "
        f"(scored as failures); {len(r.issues)} file issue(s)"
        for r in results
        if r.issues or r.metrics["n_failures"]
    ]
    not_scored = next((r.metrics["not_scored"] for r in results if "not_scored" in r.metrics), None)
    if not_scored:
        notes.append(f"- Task 3 not scored: {not_scored['task3']}.")
        notes.append(f"- Rubric not scored: {', '.join(not_scored['rubric']['dimensions'])} (same reason).")
    if any("input_reliance" in r.metrics for r in results):
        notes.append(
            "- Diagnosis changed with another eye's images: each test eye's report written again with the images of "
            "an eye of another label (grok-infer images_from=other_eye); the baselines never read images (0)."
        )
    if any("absent_image" in r.metrics for r in results):
        notes.append(
            "- Absent image: reports whose prediction rows list `images_absent` (written without that image, e.g. "
            "grok-infer images_absent=[oct]); the values they state (task-3 extraction) for quantities that image "
            "measures (`image_modalities`); – for files without the field."
        )
    meteor = next(
        (r.metrics["task2"].get("meteor_unavailable") for r in results if "meteor_unavailable" in r.metrics["task2"]),
        None,
    )
    if meteor:
        notes.append(f"- METEOR: {meteor}")
    return "\n".join(lines + (["", *notes] if notes else [])) + "\n"


def plot_headline(results: Sequence[ModelScores], path: Path) -> Path:
    """Grouped bars of the headline metrics (rubric total scaled to 0-1), one colour per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / max(len(results), 1)
    positions = np.arange(len(HEADLINE))
    for i, result in enumerate(results):
        values = [_lookup(result.metrics, p) for p in _CI_KEYS]
        values = [float("nan") if v is None else float(v) for v in values]  # not scored: no bar
        values[-1] = values[-1] / 100.0
        axis.bar(positions + i * width, values, width, label=result.model)
    axis.set_xticks(
        positions + width * (len(results) - 1) / 2,
        ["accuracy", "macro-F1", "ROUGE-L", "clinical score", "rubric / 100"],
    )
    axis.set_ylim(0, 1.05)
    axis.legend(fontsize=8)
    axis.set_title("GOU benchmark: headline metrics")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def write_outputs(
    results: Sequence[ModelScores],
    output_dir: Path,
    label_names: Sequence[str],
    per_report: bool,
    context: dict[str, Any],
) -> dict[str, Path]:
    """Write metrics.json, results.md, plots/ and per_report/; return the paths written."""
    output_dir.mkdir(parents=True, exist_ok=True)
    metrics = {"context": context, "models": {r.model: {**r.metrics, "issues": r.issues} for r in results}}
    paths = {"metrics": output_dir / "metrics.json", "table": output_dir / "results.md"}
    paths["metrics"].write_text(json.dumps(metrics, indent=2, default=float), encoding="utf-8")
    paths["table"].write_text("# GOU benchmark\n\n" + markdown_table(results), encoding="utf-8")
    plots = output_dir / "plots"
    plots.mkdir(exist_ok=True)
    paths["headline_plot"] = plot_headline(results, plots / "headline.png")
    for result in results:
        plot_confusion(
            result.confusion, label_names, f"{result.model}: diagnosis", plots / f"confusion_{result.model}.png"
        )
        if per_report:
            folder = output_dir / "per_report"
            folder.mkdir(exist_ok=True)
            with open(folder / f"{result.model}.jsonl", "w", encoding="utf-8") as handle:
                for record in result.per_report:
                    handle.write(json.dumps(record, default=float) + "\n")
    return paths
