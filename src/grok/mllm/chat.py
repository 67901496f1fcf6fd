"""ChatML conversations -> token ids and labels supervised only on assistant turns (from token ids, not strings)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from grok.mllm.tokenizer import IM_END, IM_START, IMAGE_PLACEHOLDERS
from grok.utils.errors import InputError

IGNORE_INDEX = -100
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."
# LLaVA speaker names -> ChatML roles.
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


class ConversationError(InputError):
    """A conversation cannot be encoded; the message names the record and what was expected."""


@dataclass(frozen=True)
class EncodedConversation:
    """Token ids of a ChatML conversation and its labels (IGNORE_INDEX wherever the model is not supervised)."""

    input_ids: list[int]
    labels: list[int]


def _role(turn: Mapping[str, str], record_id: str, index: int) -> str:
    speaker = turn.get("from", turn.get("role"))
    if speaker not in ROLES:
        raise ConversationError(
            f"record {record_id!r}, turn {index}: speaker {speaker!r} is not one of {sorted(ROLES)}"
        )
    return ROLES[speaker]


def encode_conversation(
    tokenizer: PreTrainedTokenizerBase,
    turns: Sequence[Mapping[str, str]],
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    add_generation_prompt: bool = False,
    max_length: int | None = None,
    image_token_counts: Mapping[str, int] | None = None,
    record_id: str = "?",
) -> EncodedConversation:
    """Encode `turns` (LLaVA `from`/`value` or ChatML `role`/`content`) in the ChatML template.

    Each turn is `<|im_start|>{role}\\n{content}<|im_end|>\\n`; labels keep the assistant content and its closing
    `<|im_end|>`, everything else is IGNORE_INDEX. With `add_generation_prompt` the last turn must be the user's and
    `<|im_start|>assistant\\n` is appended (inference). `max_length` bounds the sequence with each placeholder
    counted as `image_token_counts[modality]` tokens (default 1, LLaVA's convention); the tail is cut, and cutting
    a placeholder is an error.
    """
    im_start, im_end = tokenizer.convert_tokens_to_ids([IM_START, IM_END])
    newline = tokenizer.encode("\n", add_special_tokens=False)

    def header(role: str) -> list[int]:
        return [im_start, *tokenizer.encode(f"{role}\n", add_special_tokens=False)]

    input_ids: list[int] = []
    labels: list[int] = []
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    for index, turn in enumerate(turns):
        messages.append({"role": _role(turn, record_id, index), "content": turn.get("value", turn.get("content", ""))})
    for message in messages:
        prefix = header(message["role"])
        content = tokenizer.encode(message["content"], add_special_tokens=False)
        input_ids += [*prefix, *content, im_end, *newline]
        supervised = message["role"] == "assistant"
        labels += [IGNORE_INDEX] * len(prefix)
        labels += [*content, im_end] if supervised else [IGNORE_INDEX] * (len(content) + 1)
        labels += [IGNORE_INDEX] * len(newline)
    if add_generation_prompt:
        if messages and messages[-1]["role"] == "assistant":
            raise ConversationError(f"record {record_id!r}: generation needs a conversation ending with a user turn")
        prompt = header("assistant")
        input_ids += prompt
        labels += [IGNORE_INDEX] * len(prompt)
    if max_length is not None:
        input_ids, labels = _truncate(tokenizer, input_ids, labels, max_length, image_token_counts or {}, record_id)
    return EncodedConversation(input_ids=input_ids, labels=labels)


def _truncate(
    tokenizer: PreTrainedTokenizerBase,
    input_ids: list[int],
    labels: list[int],
    max_length: int,
    image_token_counts: Mapping[str, int],
    record_id: str,
) -> tuple[list[int], list[int]]:
    extra = {
        tokenizer.convert_tokens_to_ids(token): image_token_counts.get(token.strip("<>"), 1) - 1
        for token in IMAGE_PLACEHOLDERS
    }
    length = 0
    for position, token in enumerate(input_ids):
        length += 1 + extra.get(token, 0)
        if length > max_length:
            cut = [index for index in range(position, len(input_ids)) if input_ids[index] in extra]
            if cut:
                raise ConversationError(
                    f"record {record_id!r}: max_length={max_length} cuts the image placeholder at token {cut[0]};"
                    " raise data.max_length"
                )
            return input_ids[:position], labels[:position]
    return input_ids, labels


def render_conversation(turns: Sequence[Mapping[str, str]], system_prompt: str | None = DEFAULT_SYSTEM_PROMPT) -> str:
    """The ChatML text of a conversation (for reading and debugging; training uses `encode_conversation`)."""
    parts = [f"{IM_START}system\n{system_prompt}{IM_END}\n"] if system_prompt else []
    for index, turn in enumerate(turns):
        role = _role(turn, "?", index)
        parts.append(f"{IM_START}{role}\n{turn.get('value', turn.get('content', ''))}{IM_END}\n")
    return "".join(parts)
