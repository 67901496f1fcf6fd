"""Request bodies -> engine cases: the OpenAI chat-completions body and GROK's native report body.

Every refusal is a `RequestError` naming the field (`messages[0].content[1].image_url.url`, `max_tokens`,
`biomarkers.sbp_mmhg`). Which chat image is OCT and which CFP: the `grok.images` list of the request, one modality
per image in order of appearance; without it, `images.default_order` of the config (OCT first, then CFP).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from grok.schema.schema import Schema
from grok.serve.biomarkers import validate_row
from grok.serve.engine import Case, Sampling
from grok.serve.errors import RequestError
from grok.serve.images import read_image_url
from grok.serve.settings import ServeSettings

MODALITIES = ("oct", "cfp")
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
UNSUPPORTED_CHAT_FIELDS = ("tools", "tool_choice", "functions", "function_call", "audio", "modalities")
REPORT_FIELDS = ("images", "biomarkers", "max_tokens", "temperature", "top_p", "stream")


@dataclass
class ParsedRequest:
    """A request ready for the engine, and where each of its parts came from (for error messages)."""

    case: Case
    sampling: Sampling
    stream: bool = False
    include_usage: bool = False
    fields: dict[str, str] = field(default_factory=dict)  # engine part ("images.oct", "prompt") -> request field


def parse_chat(body: Any, settings: ServeSettings, default: Sampling, reserved: Sequence[str]) -> ParsedRequest:
    """An OpenAI chat-completions body (`messages`, `temperature`, `top_p`, `max_tokens`, `stream`, `n=1`)."""
    body = _object(body, "body")
    model = body.get("model")
    if model is not None and model != settings.model_name:
        raise RequestError(
            404,
            "model",
            f"model {model!r} is not served here; GET /v1/models lists {settings.model_name!r}",
            code="model_not_found",
        )
    for name in UNSUPPORTED_CHAT_FIELDS:
        if body.get(name):
            raise RequestError(400, name, "not supported by this server")
    n = body.get("n")
    if n is not None and n != 1:
        raise RequestError(400, "n", f"only n=1 is supported, got {n!r}")
    grok = _object(body.get("grok") or {}, "grok")
    unknown = set(grok) - {"images"}
    if unknown:
        raise RequestError(400, f"grok.{sorted(unknown)[0]}", "unknown field; expected 'images'")
    stream_options = _object(body.get("stream_options") or {}, "stream_options")
    system, turns, image_refs, fields = _messages(body.get("messages"), reserved, settings)
    modalities = _chat_modalities(grok.get("images"), len(image_refs), settings)
    images = {}
    for modality, (url, where) in zip(modalities, image_refs, strict=True):
        images[modality] = read_image_url(url, where, settings.limits, settings.images)
        fields[f"images.{modality}"] = where
    tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    token_field = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
    return ParsedRequest(
        case=Case(images=images, turns=turns, system_prompt=system),
        sampling=_sampling(body, tokens, token_field, settings, default),
        stream=_bool(body.get("stream", False), "stream"),
        include_usage=_bool(stream_options.get("include_usage", False), "stream_options.include_usage"),
        fields=fields,
    )


def parse_report(body: Any, settings: ServeSettings, default: Sampling, schema: Schema) -> ParsedRequest:
    """GROK's report body: `images` {oct, cfp: image URL}, optional `biomarkers` row, decoding settings, `stream`."""
    body = _object(body, "body")
    unknown = sorted(set(body) - set(REPORT_FIELDS))
    if unknown:
        raise RequestError(400, unknown[0], f"unknown field; expected some of {list(REPORT_FIELDS)}")
    given = _object(body.get("images"), "images") if body.get("images") is not None else {}
    wrong = sorted(set(given) - set(MODALITIES))
    if wrong:
        raise RequestError(400, f"images.{wrong[0]}", f"unknown modality; expected {' or '.join(MODALITIES)}")
    given = {m: url for m, url in given.items() if url}
    if not given:
        raise RequestError(400, "images", 'give at least one image: {"oct": <data URL>, "cfp": <data URL>}')
    if len(given) > settings.limits.max_images:
        raise RequestError(400, "images", f"{len(given)} images, over the limit of {settings.limits.max_images}")
    images = {m: read_image_url(url, f"images.{m}", settings.limits, settings.images) for m, url in given.items()}
    row = body.get("biomarkers")
    biomarkers = validate_row(row, schema) if row is not None else None
    return ParsedRequest(
        case=Case(images=images, biomarkers=biomarkers),
        sampling=_sampling(body, body.get("max_tokens"), "max_tokens", settings, default),
        stream=_bool(body.get("stream", False), "stream"),
        fields={**{f"images.{m}": f"images.{m}" for m in images}, "prompt": "biomarkers", "biomarkers": "biomarkers"},
    )


def _messages(
    messages: Any, reserved: Sequence[str], settings: ServeSettings
) -> tuple[str | None, list[dict[str, str]], list[tuple[str, str]], dict[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise RequestError(400, "messages", "expected a non-empty list of messages")
    system: str | None = None
    turns: list[dict[str, str]] = []
    images: list[tuple[str, str]] = []
    characters = 0
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        message = _object(message, where)
        role = ROLES.get(message["role"]) if isinstance(message.get("role"), str) else None
        if role is None:
            raise RequestError(400, f"{where}.role", f"expected one of {sorted(ROLES)}, got {message.get('role')!r}")
        text = _content(message.get("content"), f"{where}.content", role, images, reserved)
        characters += len(text)
        if role == "system":
            if turns or system is not None:
                raise RequestError(400, f"{where}.role", "one system message, before the conversation, is supported")
            system = text
        else:
            turns.append({"role": role, "content": text})
    if not turns or turns[-1]["role"] != "user":
        raise RequestError(400, "messages", "the last message must be the user's")
    if characters > settings.limits.max_prompt_chars:
        raise RequestError(
            400,
            "messages",
            f"the prompt is {characters:,} characters, over the limit of {settings.limits.max_prompt_chars:,} "
            "(limits.max_prompt_chars)",
        )
    if len(images) > settings.limits.max_images:
        raise RequestError(
            400, "messages", f"{len(images)} images, over the limit of {settings.limits.max_images} (limits.max_images)"
        )
    return system, turns, images, {"prompt": "messages"}


def _content(content: Any, where: str, role: str, images: list[tuple[str, str]], reserved: Sequence[str]) -> str:
    if isinstance(content, str):
        return _text(content, where, reserved)
    if not isinstance(content, list):
        raise RequestError(400, where, "expected a string or a list of content parts")
    texts = []
    for index, part in enumerate(content):
        part_where = f"{where}[{index}]"
        part = _object(part, part_where)
        kind = part.get("type")
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise RequestError(400, f"{part_where}.text", "expected a string")
            texts.append(_text(part["text"], f"{part_where}.text", reserved))
        elif kind == "image_url":
            if role != "user":
                raise RequestError(400, part_where, "images are accepted in user messages only")
            image_url = part.get("image_url")
            url = image_url.get("url") if isinstance(image_url, Mapping) else image_url
            images.append((url, f"{part_where}.image_url.url"))
        else:
            raise RequestError(400, f"{part_where}.type", f"{kind!r} is not supported; expected 'text' or 'image_url'")
    return "\n".join(texts)


def _text(text: str, where: str, reserved: Sequence[str]) -> str:
    token = next((token for token in reserved if token in text), None)
    if token is not None:
        raise RequestError(400, where, f"contains {token!r}, a reserved token; images go in image_url parts")
    return text


def _chat_modalities(named: Any, count: int, settings: ServeSettings) -> list[str]:
    if named is None:
        order = list(settings.images.default_order)
        if count > len(order):
            raise RequestError(400, "messages", f"{count} images but images.default_order names {len(order)}")
        return order[:count]
    if not isinstance(named, list) or any(m not in MODALITIES for m in named):
        raise RequestError(400, "grok.images", f"expected a list of {' / '.join(MODALITIES)}, got {named!r}")
    if len(named) != count:
        raise RequestError(400, "grok.images", f"names {len(named)} modalities for {count} image(s)")
    if len(set(named)) != len(named):
        raise RequestError(400, "grok.images", "one OCT and one CFP image at most")
    return list(named)


def _sampling(
    body: Mapping[str, Any], tokens: Any, token_field: str, settings: ServeSettings, default: Sampling
) -> Sampling:
    temperature = _number(body.get("temperature"), "temperature", 0.0, 2.0, default.temperature)
    top_p = _number(body.get("top_p"), "top_p", 0.0, 1.0, default.top_p)
    if body.get("top_p") is not None and top_p == 0:
        raise RequestError(400, "top_p", "expected a number in (0, 1]")
    limit = settings.limits.max_new_tokens
    if tokens is None:
        max_new_tokens = min(default.max_new_tokens, limit)
    elif isinstance(tokens, bool) or not isinstance(tokens, int) or not 1 <= tokens <= limit:
        expected = f"expected an integer in [1, {limit}] (limits.max_new_tokens)"
        raise RequestError(400, token_field, f"{expected}, got {tokens!r}")
    else:
        max_new_tokens = tokens
    return Sampling(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p)


def _number(value: Any, name: str, low: float, high: float, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise RequestError(400, name, f"expected a number in [{low:g}, {high:g}], got {value!r}")
    return float(value)


def _bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise RequestError(400, name, f"expected true or false, got {value!r}")
    return value


def _object(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise RequestError(400, name, f"expected a JSON object, got {type(value).__name__}")
    return dict(value)
