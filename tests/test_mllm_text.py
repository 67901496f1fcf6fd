"""ChatML label masking, vocabulary trimming and visual-token splicing."""

from __future__ import annotations

import pytest
import torch

from grok.mllm.chat import IGNORE_INDEX, ConversationError, encode_conversation
from grok.mllm.splice import PlaceholderMismatchError, VisualInput, splice_visual_tokens
from grok.mllm.tokenizer import build_tokenizer, placeholder_ids
from grok.mllm.vocab_trim import VocabularyMap, build_vocabulary_map

TURNS = [
    {"from": "human", "value": "<oct>\nAge 63. Write the report."},
    {"from": "gpt", "value": "Conclusion: AMD."},
    {"from": "human", "value": "Why?"},
    {"from": "gpt", "value": "Thick macula."},
]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def test_labels_supervise_exactly_the_assistant_turns_and_their_im_end(tokenizer) -> None:
    encoded = encode_conversation(tokenizer, TURNS, system_prompt="You are a helpful assistant.")
    ids = encoded.input_ids
    im_start, im_end = tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    enc = lambda text: tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
    nl = enc("\n")
    expected_ids, expected_labels = [], []
    for role, content in [("system", "You are a helpful assistant.")] + [
        ("user" if t["from"] == "human" else "assistant", t["value"]) for t in TURNS
    ]:
        block = [im_start, *enc(f"{role}\n"), *enc(content), im_end, *nl]
        expected_ids += block
        if role == "assistant":
            header = 1 + len(enc(f"{role}\n"))
            expected_labels += [IGNORE_INDEX] * header + [*enc(content), im_end] + [IGNORE_INDEX] * len(nl)
        else:
            expected_labels += [IGNORE_INDEX] * len(block)
    assert ids == expected_ids
    assert encoded.labels == expected_labels
    supervised = [i for i, label in enumerate(encoded.labels) if label != IGNORE_INDEX]
    # two assistant turns: their content and closing <|im_end|>, nothing else
    assert tokenizer.decode([ids[i] for i in supervised]) == "Conclusion: AMD.<|im_end|>Thick macula.<|im_end|>"
    assert sum(ids[i] == im_end for i in supervised) == 2


def test_generation_prompt_and_truncation_errors(tokenizer) -> None:
    prompt = encode_conversation(tokenizer, TURNS[:1], add_generation_prompt=True)
    assert tokenizer.decode(prompt.input_ids).endswith("<|im_start|>assistant\n")
    assert all(label == IGNORE_INDEX for label in prompt.labels)
    with pytest.raises(ConversationError, match="ending with a user turn"):
        encode_conversation(tokenizer, TURNS[:2], add_generation_prompt=True)
    with pytest.raises(ConversationError, match="cuts the image placeholder"):
        encode_conversation(tokenizer, TURNS, system_prompt="word " * 40, max_length=20)
    short = encode_conversation(tokenizer, TURNS, max_length=30)
    assert len(short.input_ids) == len(short.labels) == 30


def test_vocabulary_map_round_trip_and_fallback(tokenizer, tmp_path) -> None:
    vocabulary = build_vocabulary_map(tokenizer, ["Conclusion: AMD.", "Thick macula."])
    real = torch.tensor(tokenizer.encode("Conclusion: AMD.<|im_end|><oct>", add_special_tokens=False))
    compact = vocabulary.to_compact(real)
    assert compact.max() < vocabulary.size < 40
    assert torch.equal(vocabulary.to_real(compact), real)
    unseen = torch.tensor(tokenizer.encode(" glaucoma", add_special_tokens=False))
    assert torch.equal(vocabulary.to_real(vocabulary.to_compact(unseen)), torch.full_like(unseen, 151643))
    labels = torch.tensor([IGNORE_INDEX, int(real[0])])
    assert vocabulary.to_compact(labels)[0] == IGNORE_INDEX
    vocabulary.save(tmp_path / "vocab_map.json")
    reloaded = VocabularyMap.load(tmp_path / "vocab_map.json")
    assert torch.equal(reloaded.compact_to_real, vocabulary.compact_to_real)


def _batch(tokenizer, texts):
    rows = [tokenizer.encode(text, add_special_tokens=False) for text in texts]
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), tokenizer.pad_token_id)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    embeds = ids.float().unsqueeze(-1).repeat(1, 1, 4)  # embedding = the token id, so positions are checkable
    return ids, mask, embeds


def test_splice_zero_one_two_images_per_sample(tokenizer) -> None:
    ph = placeholder_ids(tokenizer)
    ids, mask, embeds = _batch(tokenizer, ["no image here", "<oct>\nA", "<oct>\n<cfp>\nB <oct>"])
    oct_images = VisualInput(-torch.arange(1, 4).float().view(3, 1, 1).expand(3, 2, 4), torch.tensor([1, 2, 2]))
    cfp_images = VisualInput(torch.full((1, 3, 4), -9.0), torch.tensor([2]))
    labels = ids.clone()
    out = splice_visual_tokens(ids, embeds, mask, {ph["oct"]: oct_images, ph["cfp"]: cfp_images}, labels=labels)
    lengths = out.attention_mask.sum(1).tolist()
    assert lengths == [mask[0].sum().item(), mask[1].sum().item() + 1, mask[2].sum().item() + 1 + 2 + 1]
    sample2 = out.inputs_embeds[2, : lengths[2], 0].tolist()
    assert sample2[:2] == [-2.0, -2.0]  # first <oct> of sample 2 -> its first OCT image
    assert sample2[3:6] == [-9.0, -9.0, -9.0]  # <cfp> after "\n"
    assert sample2[-2:] == [-3.0, -3.0]  # second <oct> -> second OCT image
    assert (out.labels[2, :2] == IGNORE_INDEX).all() and (out.labels[1, :2] == IGNORE_INDEX).all()
    assert torch.equal(out.inputs_embeds[0, : lengths[0], 0], embeds[0, : lengths[0], 0])
    assert out.position_ids[1, : lengths[1]].tolist() == list(range(lengths[1]))

    left = splice_visual_tokens(ids, embeds, mask, {ph["oct"]: oct_images, ph["cfp"]: cfp_images}, padding_side="left")
    assert left.attention_mask[0, -1] == 1 and left.attention_mask[0, 0] == 0
    assert torch.equal(left.inputs_embeds[2, -lengths[2] :], out.inputs_embeds[2, : lengths[2]])


def test_splice_mismatch_is_an_error_not_a_truncation(tokenizer) -> None:
    ph = placeholder_ids(tokenizer)
    ids, mask, embeds = _batch(tokenizer, ["<oct>\n<oct>\nA", "B"])
    one_image = VisualInput(torch.zeros(1, 2, 4), torch.tensor([0]))
    with pytest.raises(PlaceholderMismatchError, match="sample 0: 2 placeholder"):
        splice_visual_tokens(ids, embeds, mask, {ph["oct"]: one_image})
    ids, mask, embeds = _batch(tokenizer, ["<oct>\nA", "B"])
    misplaced = VisualInput(torch.zeros(2, 2, 4), torch.tensor([0, 1]))
    with pytest.raises(PlaceholderMismatchError, match="sample 1: 0 placeholder"):
        splice_visual_tokens(ids, embeds, mask, {ph["oct"]: misplaced})
    ids, mask, embeds = _batch(tokenizer, ["<cfp>\nA"])
    with pytest.raises(PlaceholderMismatchError, match="1 placeholder"):
        splice_visual_tokens(ids, embeds, mask, {}, placeholder_ids=ph.values())
