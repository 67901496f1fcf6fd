"""Predictions JSONL (`{"id", "prediction", "model", "scores"}`): loading, validation and alignment to references.

Problems never stop the benchmark and are never silent: each is recorded with file and line, and every reference id
without a usable prediction is scored as a failure (empty report), never dropped. The one exception is a bad
`images_absent` (the images a report was written without): ignoring it would report a wrong absent-image count, so it
stops grok-eval, naming file, line, id, field and value.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grok.utils.errors import InputError


class PredictionsFileError(InputError):
    """A predictions file is missing, a folder, holds no usable prediction record (e.g. a CSV or a binary file), or a
    record whose `images_absent` is not a list of known images."""


@dataclass(frozen=True)
class Prediction:
    """One model report for one eye."""

    id: str
    text: str
    scores: Mapping[str, float] | None = None
    grounding: Mapping[str, Any] | None = None  # GROK's quoted quantities ({"source", "quantities"}), when given
    images_absent: tuple[str, ...] | None = None  # the images the report was written without ("oct", "cfp"), if any


@dataclass(frozen=True)
class PredictionIssue:
    """A problem in a predictions file: where, what kind, and what was expected."""

    file: str
    line: int | None
    kind: str  # bad_encoding|bad_json|missing_id|empty_text|duplicate_id|unknown_id|bad_scores|missing
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.kind}: {self.message}"


@dataclass
class PredictionSet:
    """The usable predictions of one model, keyed by id, plus every issue found while reading them."""

    model: str
    path: str
    by_id: dict[str, Prediction] = field(default_factory=dict)
    issues: list[PredictionIssue] = field(default_factory=list)

    def aligned(self, reference_ids: Sequence[str]) -> list[Prediction]:
        """One prediction per reference id, in reference order; a missing one becomes an empty report (a failure)
        and is recorded as an issue. Predictions for ids outside the references are recorded and ignored."""
        wanted = set(reference_ids)
        for extra in sorted(set(self.by_id) - wanted):
            self.issues.append(PredictionIssue(self.path, None, "unknown_id", f"id {extra!r} is not in the references"))
        aligned = []
        for reference_id in reference_ids:
            prediction = self.by_id.get(reference_id)
            if prediction is None:
                self.issues.append(
                    PredictionIssue(
                        self.path, None, "missing", f"no prediction for {reference_id!r}: scored as failure"
                    )
                )
                prediction = Prediction(reference_id, "")
            aligned.append(prediction)
        return aligned

    def issue_counts(self) -> dict[str, int]:
        """Number of issues of each kind."""
        counts: dict[str, int] = {}
        for issue in self.issues:
            counts[issue.kind] = counts.get(issue.kind, 0) + 1
        return counts


def _scores(raw: object, label_names: Sequence[str]) -> Mapping[str, float] | None:
    if not isinstance(raw, Mapping) or set(raw) != set(label_names):
        raise ValueError(f"'scores' must map every label {list(label_names)} to a probability")
    return {label: float(raw[label]) for label in label_names}


def load_predictions(
    path: str | Path,
    label_names: Sequence[str],
    model: str | None = None,
    images: Collection[str] | None = None,
) -> PredictionSet:
    """Read a predictions JSONL file, validating every line.

    Lines that are not UTF-8, not JSON objects, lack an `id`, or carry an empty `prediction` are recorded as issues
    and skipped (their eye then counts as a failure); a duplicated id keeps the first record. A file without a single
    usable record (empty, or not JSONL at all: a CSV, a binary file) raises PredictionsFileError naming its first
    problem. The model name is the `model` argument, else the records' `model` field, else the file name without
    `_test.jsonl`. `images`: the image names an `images_absent` field may list (grok-eval: the keys of its
    `image_modalities`); a record's field that is not a list of them raises PredictionsFileError; None: the field is
    not read.
    """
    path = Path(path)
    if path.is_dir():
        raise PredictionsFileError(f"{path}: is a folder; expected a predictions JSONL file")
    if not path.is_file():
        raise PredictionsFileError(f"{path}: predictions file not found")
    result = PredictionSet(model or "", str(path))
    models: list[str] = []
    with open(path, "rb") as handle:
        for number, raw_line in enumerate(handle, start=1):
            issue = _read_line(raw_line, number, result, label_names, models, images)
            if issue is not None:
                result.issues.append(issue)
    if not result.model:
        result.model = models[0] if models else path.name.removesuffix(".jsonl").removesuffix("_test")
    if not result.by_id:
        raise PredictionsFileError(_no_records_message(path, result.issues))
    return result


def _no_records_message(path: Path, issues: Sequence[PredictionIssue]) -> str:
    """Why a predictions file has no usable record: its first problem (file:line), or that it is empty."""
    expected = 'expected JSON lines {"id": ..., "prediction": ...}'
    if not issues:
        return f"{path}: no prediction records (an empty file; {expected})"
    more = f" (and {len(issues) - 1} more bad line(s))" if len(issues) > 1 else ""
    return f"{issues[0]}{more}: no usable prediction record in the file; {expected}"


def _images_absent(
    record: Mapping[str, Any], images: Collection[str] | None, file: str, number: int
) -> tuple[str, ...] | None:
    """The record's `images_absent` (sorted, without repeats; None when absent, null or empty); PredictionsFileError
    naming file, line, id, field and value when it is not a list of `images`."""
    value = record.get("images_absent")
    if images is None or value is None or value == []:
        return None
    if not isinstance(value, list) or any(not isinstance(v, str) or v not in images for v in value):
        issue = PredictionIssue(
            file,
            number,
            "bad_images_absent",
            f"{record['id']!r}: field 'images_absent': {value!r}: expected a list of the images the report was "
            f"written without, among {sorted(images)}",
        )
        raise PredictionsFileError(str(issue))
    return tuple(sorted(set(value)))


def _read_line(
    raw_line: bytes,
    number: int,
    result: PredictionSet,
    label_names: Sequence[str],
    models: list[str],
    images: Collection[str] | None = None,
) -> PredictionIssue | None:
    file = result.path
    if not raw_line.strip():
        return None
    try:
        line = raw_line.decode("utf-8")
    except UnicodeDecodeError as error:
        return PredictionIssue(file, number, "bad_encoding", f"not UTF-8 (byte {error.start}: {error.reason})")
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        return PredictionIssue(file, number, "bad_json", f"not valid JSON ({error.msg}, column {error.colno})")
    if not isinstance(record, dict):
        return PredictionIssue(file, number, "bad_json", f"expected a JSON object, got {type(record).__name__}")
    record_id = record.get("id")
    if not isinstance(record_id, str) or not record_id.strip():
        return PredictionIssue(file, number, "missing_id", "record has no string 'id' (the eye id, e.g. S000123_R)")
    text = record.get("prediction")
    if not isinstance(text, str) or not text.strip():
        return PredictionIssue(file, number, "empty_text", f"{record_id!r}: 'prediction' is missing or empty")
    if record_id in result.by_id:
        return PredictionIssue(file, number, "duplicate_id", f"{record_id!r} seen before; the first record is kept")
    images_absent = _images_absent(record, images, file, number)
    scores = None
    if record.get("scores") is not None:
        try:
            scores = _scores(record["scores"], label_names)
        except (ValueError, TypeError) as error:
            result.by_id[record_id] = Prediction(record_id, text, images_absent=images_absent)
            return PredictionIssue(file, number, "bad_scores", f"{record_id!r}: {error}; scores ignored")
    if isinstance(record.get("model"), str):
        models.append(record["model"])
    grounding = record.get("grounding") if isinstance(record.get("grounding"), dict) else None
    result.by_id[record_id] = Prediction(record_id, text, scores, grounding, images_absent)
    return None
