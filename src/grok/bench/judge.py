"""Optional LLM judge through an OpenAI-compatible chat-completions endpoint: the paper's rubric and label extraction.

Answers must be JSON and are validated (keys, ranges, label names); invalid answers are retried, then counted as
failures. Every response is cached on disk by (model, prompt), so reruns cost nothing. Never required.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import urllib.error
import urllib.request
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from grok.bench.predictions import Prediction
from grok.bench.references import Reference
from grok.bench.rubric import DIMENSIONS
from grok.schema.schema import Schema, load_schema

log = logging.getLogger(__name__)


class JudgeAnswerError(ValueError):
    """The judge's answer is not the JSON the prompt asked for; the message says what was wrong."""


def _prompt(name: str) -> str:
    return resources.files("grok.bench").joinpath("prompts", name).read_text(encoding="utf-8")


def _json_object(content: str) -> dict[str, Any]:
    match = re.search(r"\{.*\}", content, re.DOTALL)
    if match is None:
        raise JudgeAnswerError(f"no JSON object in the answer: {content[:200]!r}")
    try:
        value = json.loads(match.group(0))
    except json.JSONDecodeError as error:
        raise JudgeAnswerError(f"answer is not valid JSON ({error.msg}): {content[:200]!r}") from error
    if not isinstance(value, dict):
        raise JudgeAnswerError("answer is not a JSON object")
    return value


def validate_rubric(answer: dict[str, Any]) -> dict[str, float]:
    """The eight rubric dimensions, each a number within its range."""
    scores = {}
    for name, (low, high) in DIMENSIONS.items():
        value = answer.get(name)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not low <= value <= high:
            raise JudgeAnswerError(f"rubric key {name!r}: expected a number in [{low}, {high}], got {value!r}")
        scores[name] = float(value)
    return scores


def validate_labels(answer: dict[str, Any], label_names: Sequence[str]) -> list[str]:
    """The extracted labels, each one of `label_names`."""
    labels = answer.get("labels")
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise JudgeAnswerError(f"'labels' must be a list of label names, got {labels!r}")
    unknown = [label for label in labels if label not in label_names]
    if unknown:
        raise JudgeAnswerError(f"unknown label(s) {unknown}; expected some of {list(label_names)}")
    return list(dict.fromkeys(labels))


class LLMJudge:
    """Scores reports with an LLM behind an OpenAI-compatible endpoint, caching every response."""

    def __init__(
        self,
        base_url: str,
        model: str,
        cache_dir: str | Path,
        api_key_env: str | None = None,
        temperature: float = 0.0,
        timeout_s: float = 60.0,
        max_retries: int = 2,
        rubric: bool = True,
        labels: bool = True,
        max_reports: int | None = None,
        schema: Schema | None = None,
    ):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.cache_dir = Path(cache_dir)
        self.api_key = os.environ.get(api_key_env, "") if api_key_env else ""
        self.temperature = temperature
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.do_rubric, self.do_labels = rubric, labels
        self.max_reports = max_reports
        self.schema = schema or load_schema()
        self.requests_sent = 0

    def _post(self, prompt: str) -> str:
        body = json.dumps(
            {"model": self.model, "temperature": self.temperature, "messages": [{"role": "user", "content": prompt}]}
        ).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        self.requests_sent += 1
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
            payload = json.loads(response.read().decode("utf-8"))
        try:
            return payload["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as error:
            raise JudgeAnswerError(f"{self.url}: unexpected response shape {str(payload)[:200]}") from error

    def ask(self, prompt: str, validate) -> Any:
        """The validated answer to `prompt`: from the cache, else from the endpoint (retrying invalid answers)."""
        key = hashlib.sha256(f"{self.model}\n{prompt}".encode()).hexdigest()
        cached = self.cache_dir / f"{key}.json"
        if cached.is_file():
            return validate(_json_object(json.loads(cached.read_text(encoding="utf-8"))["content"]))
        error: Exception | None = None
        for _ in range(self.max_retries + 1):
            try:
                content = self._post(prompt)
                value = validate(_json_object(content))
            except (JudgeAnswerError, urllib.error.URLError, TimeoutError, json.JSONDecodeError) as failure:
                error = failure
                continue
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            cached.write_text(json.dumps({"model": self.model, "prompt": prompt, "content": content}), encoding="utf-8")
            return value
        raise JudgeAnswerError(f"judge gave no valid answer after {self.max_retries + 1} tries: {error}")

    def rubric(self, reference: Reference, report: str) -> dict[str, float]:
        """The LLM's rubric scores of one report."""
        facts = reference.facts
        prompt = _prompt("rubric_judge.txt").format(
            labels=", ".join(reference.labels),
            biomarkers=json.dumps(facts.get("biomarkers") or {}),
            findings=", ".join(facts.get("findings") or []) or "none",
            reference=reference.text,
            report=report,
        )
        return self.ask(prompt, validate_rubric)

    def labels(self, report: str) -> list[str]:
        """The diagnosis labels the LLM reads in one report."""
        prompt = _prompt("label_judge.txt").format(
            label_names=", ".join(self.schema.label_names), normal_label=self.schema.normal_label, report=report
        )
        return self.ask(prompt, lambda answer: validate_labels(answer, self.schema.label_names))

    def evaluate(
        self, references: Sequence[Reference], predictions: Sequence[Prediction], parsed: Sequence[Sequence[str]]
    ) -> dict[str, Any]:
        """Judge rubric means, judge-label accuracy and macro-F1, and parser-vs-judge label agreement."""
        from grok.bench.classification import classification_metrics

        limit = len(references) if self.max_reports is None else min(self.max_reports, len(references))
        rubric_rows, judged, truth, agree, failures = [], [], [], [], 0
        for reference, prediction, parser_labels in list(zip(references, predictions, parsed, strict=True))[:limit]:
            if not prediction.text.strip():
                continue
            try:
                if self.do_rubric:
                    rubric_rows.append(self.rubric(reference, prediction.text))
                if self.do_labels:
                    labels = self.labels(prediction.text)
                    judged.append(labels)
                    truth.append(list(reference.labels))
                    agree.append(set(labels) == set(parser_labels))
            except JudgeAnswerError as error:
                failures += 1
                log.warning("judge failed on %s: %s", reference.id, error)
        result: dict[str, Any] = {"judged_reports": limit, "failures": failures, "requests_sent": self.requests_sent}
        if rubric_rows:
            result["rubric"] = {name: sum(r[name] for r in rubric_rows) / len(rubric_rows) for name in DIMENSIONS}
            result["rubric"]["total"] = sum(sum(r.values()) for r in rubric_rows) / len(rubric_rows)
        if judged:
            metrics = classification_metrics(truth, judged, self.schema.label_names)
            result["labels"] = {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"]}
            result["parser_agreement"] = sum(agree) / len(agree)
        return result
