"""Optional LLM writer: paraphrase our report, or write the paper's narrative from images + biomarkers + label.

Every answer is fact-checked against the rule engine (numbers within tolerance, the stated diagnosis equal to the
report's conclusion, no other diagnosis); a failing answer is rejected and counted, never kept. Answers are cached on
disk keyed by the full request, and transport errors are retried with exponential backoff.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from string import Template
from typing import Any, Protocol

from grok.grounding.matching import match_to_values, row_candidates
from grok.grounding.spans import SPANS_FIELD, strip_conversation, strip_marks
from grok.grounding.symbols import QuantityTokens
from grok.knowledge.engine import Assessment
from grok.knowledge.factcheck import diagnosis_problems, number_problems, numbers_in
from grok.knowledge.instructions import EyeCase, InstructionBuilder

MODES = ("none", "paraphrase", "paper")
RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class LLMError(RuntimeError):
    """The LLM backend failed after all retries."""


class ChatBackend(Protocol):
    """Anything that turns chat messages into one answer text."""

    def complete(self, messages: list[dict[str, Any]]) -> str: ...


class OpenAICompatibleBackend:
    """POST {base_url}/chat/completions (OpenAI, vLLM, llama.cpp server, ...) with retries."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        temperature: float = 0.7,
        max_tokens: int = 700,
        timeout_s: float = 120.0,
        max_retries: int = 3,
        backoff_s: float = 1.0,
    ) -> None:
        import httpx

        self.url = base_url.rstrip("/") + "/chat/completions"
        self.body = {"model": model, "temperature": temperature, "max_tokens": max_tokens}
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(timeout=timeout_s, headers=headers)
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self._httpx = httpx

    def complete(self, messages: list[dict[str, Any]]) -> str:
        """The first choice's message content; raises LLMError after `max_retries` failed retries."""
        last_error = ""
        for attempt in range(self.max_retries + 1):
            try:
                response = self.client.post(self.url, json={**self.body, "messages": messages})
                if response.status_code in RETRY_STATUS:
                    last_error = f"HTTP {response.status_code}"
                else:
                    response.raise_for_status()
                    return str(response.json()["choices"][0]["message"]["content"]).strip()
            except self._httpx.TransportError as error:
                last_error = repr(error)
            except (self._httpx.HTTPStatusError, KeyError, IndexError, ValueError) as error:
                raise LLMError(f"{self.url}: unusable response ({error!r})") from error
            if attempt < self.max_retries:
                time.sleep(self.backoff_s * 2**attempt)
        raise LLMError(f"{self.url}: failed after {self.max_retries + 1} attempts ({last_error})")


class TransformersBackend:
    """A local causal LM (a directory given in config; never downloaded), text only."""

    def __init__(self, model_path: str, temperature: float = 0.7, max_tokens: int = 700) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
        self.model = AutoModelForCausalLM.from_pretrained(model_path, local_files_only=True).eval()
        self.temperature = temperature
        self.max_tokens = max_tokens

    def complete(self, messages: list[dict[str, Any]]) -> str:
        """Greedy (temperature 0) or sampled generation from the chat template."""
        import torch

        text_messages = [{"role": m["role"], "content": _text_of(m["content"])} for m in messages]
        inputs = self.tokenizer.apply_chat_template(
            text_messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        sample = self.temperature > 0
        with torch.no_grad():
            output = self.model.generate(
                **inputs,
                max_new_tokens=self.max_tokens,
                do_sample=sample,
                temperature=self.temperature if sample else None,
            )
        return self.tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(part.get("text", "") for part in content if part.get("type") == "text")


def build_backend(cfg: Mapping[str, Any]) -> ChatBackend:
    """The backend named by `cfg.backend` (openai | transformers)."""
    if cfg["backend"] == "openai":
        key_env = cfg.get("api_key_env")
        return OpenAICompatibleBackend(
            base_url=cfg["base_url"],
            model=cfg["model"],
            api_key=os.environ.get(key_env) if key_env else None,
            temperature=float(cfg["temperature"]),
            max_tokens=int(cfg["max_tokens"]),
            timeout_s=float(cfg["timeout_s"]),
            max_retries=int(cfg["max_retries"]),
            backoff_s=float(cfg["backoff_s"]),
        )
    if cfg["backend"] == "transformers":
        if not cfg.get("model_path"):
            raise ValueError("llm_writer.model_path: backend=transformers needs a local model directory")
        return TransformersBackend(cfg["model_path"], float(cfg["temperature"]), int(cfg["max_tokens"]))
    raise ValueError(f"llm_writer.backend: expected openai or transformers, got {cfg['backend']!r}")


def load_prompt(name_or_path: str) -> Template:
    """A prompt template: a file shipped in grok/knowledge/prompts/ by name, or a path."""
    path = Path(name_or_path)
    if not path.exists():
        path = Path(__file__).with_name("prompts") / f"{name_or_path}.txt"
    if not path.exists():
        raise FileNotFoundError(f"llm_writer.prompt: no prompt {name_or_path!r} (looked for {path})")
    return Template(path.read_text(encoding="utf-8"))


class AnswerCache:
    """JSON files under a folder, keyed by the SHA-256 of the request."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    @staticmethod
    def key(request: Mapping[str, Any]) -> str:
        return hashlib.sha256(json.dumps(request, sort_keys=True, ensure_ascii=False).encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> str | None:
        path = self._path(key)
        return json.loads(path.read_text(encoding="utf-8"))["answer"] if path.exists() else None

    def put(self, key: str, answer: str) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"answer": answer}, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, path)


class LLMWriter:
    """Rewrites the answers of selected records with an LLM; used as the `rewrite` hook of `generate`."""

    def __init__(
        self,
        cfg: Mapping[str, Any],
        builder: InstructionBuilder,
        image_root: str | Path,
        backend: ChatBackend | None = None,
    ) -> None:
        if cfg["mode"] not in MODES[1:]:
            raise ValueError(f"llm_writer.mode: expected one of {list(MODES)}, got {cfg['mode']!r}")
        self.cfg = cfg
        self.mode = cfg["mode"]
        self.builder = builder
        self.kb = builder.writer.kb
        self.image_root = Path(image_root)
        self.backend = backend or build_backend(cfg)
        self.prompt = load_prompt(cfg["prompt"])
        self.cache = AnswerCache(cfg["cache_dir"])
        self.tasks = set(cfg.get("tasks") or ["report"])
        self.tolerance = float(cfg["number_tolerance"])
        self.keep_rejected_record = cfg.get("on_reject", "fallback") == "fallback"
        self.stats: Counter[str] = Counter()
        self.model_id = str(cfg.get("model_path") or cfg.get("model"))
        self.quantity_tokens = QuantityTokens.from_knowledge_base(self.kb)
        texts = builder.writer.texts
        self.quantity_names = {k: [texts[k].short, texts[k].display, texts[k].label] for k in texts}

    # ------------------------------------------------------------------------------------------ the hook
    def __call__(self, record: dict[str, Any], case: EyeCase) -> bool:
        """Replace the record's answer with a checked LLM answer; False when the record should be dropped."""
        if record["task"] not in self.tasks:
            return True
        if self.mode == "paper" and record["style"] != "narrative":
            rng = random.Random(f"paper:{record['id']}")
            record["style"] = "narrative"
            turns = self.builder.conversation("report", case, "narrative", rng)
            record["conversations"], record[SPANS_FIELD] = strip_conversation(turns)
        deterministic = record["conversations"][1]["value"]
        messages = self.messages(case, deterministic)
        self.stats["requests"] += 1
        try:
            answer = self.ask(messages)
        except LLMError:
            self.stats["errors"] += 1
            return self.keep_rejected_record
        problems = self.check(answer, case, deterministic, record["conversations"][0]["value"])
        if problems:
            self.stats["rejected"] += 1
            self.stats["rejected_numbers" if "number" in problems[0] else "rejected_diagnosis"] += 1
            return self.keep_rejected_record
        self.stats["accepted"] += 1
        record["conversations"][1]["value"] = answer
        self._match_spans(record, case)
        return True

    def _match_spans(self, record: dict[str, Any], case: EyeCase) -> None:
        """Re-derive the answer's quantity spans: the LLM's numbers matched to the row's values within tolerance
        (numbers that match nothing are counted in `stats['unmatched_numbers']`)."""
        a = case.assessment
        values = {q.name: q.value for q in a.quantities}
        ranges = {q.name: (q.low, q.high) for q in a.quantities if q.low is not None and q.high is not None}
        candidates = row_candidates(values, ranges, self.quantity_tokens)
        result = match_to_values(record["conversations"][1]["value"], candidates, self.quantity_names, self.tolerance)
        kept = [row for row in record.get(SPANS_FIELD, []) if row[0] != 1]
        record[SPANS_FIELD] = sorted(kept + [[1, s.start, s.end, s.symbol] for s in result.spans])
        self.stats["matched_numbers"] += len(result.spans)
        self.stats["unmatched_numbers"] += len(result.unmatched)

    def ask(self, messages: list[dict[str, Any]]) -> str:
        """The cached answer for these messages, or a fresh one from the backend (then cached)."""
        key = AnswerCache.key(
            {"model": self.model_id, "mode": self.mode, "messages": messages, "cfg": _request_cfg(self.cfg)}
        )
        cached = self.cache.get(key)
        if cached is not None:
            self.stats["cache_hits"] += 1
            return cached
        answer = self.backend.complete(messages)
        self.cache.put(key, answer)
        return answer

    # ------------------------------------------------------------------------------------------ prompts
    def messages(self, case: EyeCase, deterministic: str) -> list[dict[str, Any]]:
        """The chat messages of one request."""
        if self.mode == "paraphrase":
            return [{"role": "user", "content": self.prompt.substitute(report=deterministic)}]
        a = case.assessment
        systemic = {k: v for k, v in a.systemic.items() if v is not None}
        age, sex, eye = self.builder._person(case)
        text = self.prompt.substitute(
            age=strip_marks(age)[0],
            sex=sex,
            eye=eye,
            systemic_json=json.dumps(systemic, ensure_ascii=False),
            oct_measures_json=json.dumps(_measures(a, self.kb.schema.oct_biomarkers)),
            cfp_measures_json=json.dumps(_measures(a, self.kb.schema.cfp_biomarkers)),
            reference_json=json.dumps({q.name: [q.low, q.high] for q in a.quantities if q.low is not None}),
            label=", ".join(self.builder.writer.label_names[label] for label in case.conclusion.labels),
        )
        content: list[dict[str, Any]] | str = text
        if self.cfg.get("multimodal"):
            content = [{"type": "text", "text": text}]
            for modality in ("cfp", "oct"):
                if modality in case.images:
                    data = base64.b64encode((self.image_root / case.images[modality]).read_bytes()).decode()
                    content.append({"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}})
        return [{"role": "user", "content": content}]

    # ------------------------------------------------------------------------------------------ fact check
    def check(self, answer: str, case: EyeCase, deterministic: str, human_turn: str) -> list[str]:
        """Reasons to reject `answer` (empty when it passes)."""
        if self.mode == "paraphrase":
            required = numbers_in(deterministic)
            allowed = numbers_in(human_turn)
        else:
            a = case.assessment
            by_name = a.by_name
            required = [
                float(self.builder.writer.texts[name].bare(by_name[name].value))
                for f in a.findings
                for name in f.biomarkers
            ]
            allowed = _allowed_numbers(a) + numbers_in(human_turn) + numbers_in(self.prompt.template)
        problems = number_problems(answer, required, allowed, self.tolerance)
        return problems + diagnosis_problems(answer, case.conclusion.labels, self.kb.schema)


def _measures(a: Assessment, names: list[str]) -> dict[str, float | None]:
    by_name = a.by_name
    return {name: by_name[name].value for name in names if name in by_name}


def _allowed_numbers(a: Assessment) -> list[float]:
    numbers = []
    for q in a.quantities:
        numbers += [x for x in (q.value, q.low, q.high) if x is not None]
    numbers += [v for v in a.systemic.values() if isinstance(v, (int, float))]
    return numbers


def _request_cfg(cfg: Mapping[str, Any]) -> dict[str, Any]:
    return {k: cfg.get(k) for k in ("backend", "temperature", "max_tokens", "prompt")}
