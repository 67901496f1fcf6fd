"""The paper's setting (experiment=mllm_paper: a pretrained Qwen2 with LoRA) at tiny size: the tokens GROK adds
train beside the adapter, are saved with it and reload through plain peft and the project's loader."""

from __future__ import annotations

import hydra
import pytest
import torch
from peft import PeftModel
from transformers import Qwen2Config, Qwen2ForCausalLM

from grok.mllm.collator import InstructCollator
from grok.mllm.export import export_mllm, load_exported_mllm
from grok.mllm.generate import generate_batch
from grok.mllm.tokenizer import build_tokenizer
from helpers import compose_config
from mllm_helpers import write_instruction_fixture


@pytest.fixture(scope="module")
def pretrained_folder(tmp_path_factory):
    """A tiny 'pretrained' Qwen2 folder: the real class and tokenizer, Qwen2-7B's padded vocabulary (152064 rows,
    so the added tokens take spare rows, as on the real model)."""
    folder = tmp_path_factory.mktemp("qwen2_tiny")
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=152064, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, tie_word_embeddings=False,
    )  # fmt: skip
    Qwen2ForCausalLM(config).save_pretrained(folder)
    build_tokenizer().save_pretrained(folder)
    return folder


def _paper_config(pretrained_folder, tmp_path):
    instructions = write_instruction_fixture(tmp_path / "data")
    return compose_config(
        "mllm",
        tmp_path,
        [
            "experiment=mllm_paper",
            f"llm.pretrained_path={pretrained_folder}",
            "llm.dtype=float32",
            "hardware=cpu",
            "encoder@cfp_encoder=tiny_cfp",
            "adaptation.r=4",
            "adaptation.alpha=8",
            f"paths.instructions_dir={instructions}",
            "oct_encoder.allow_unaligned=true",
            "oct_encoder.transform={family: tiny, image_size: 32}",
            "oct_encoder.architecture={img_size: 32, patch_size: 8, embed_dim: 32, depth: 1, num_heads: 4, pool: avg}",
            "cfp_encoder.architecture.embed_dim=32",
            "cfp_encoder.architecture.depth=1",
            "cfp_encoder.architecture.img_size=32",
            "cfp_encoder.transform.image_size=32",
            "logger=none",
        ],
    )


def test_paper_setting_trains_the_added_tokens_beside_the_adapter_and_reloads_them(pretrained_folder, tmp_path):
    cfg = _paper_config(pretrained_folder, tmp_path)
    assert cfg.adaptation.mode == "lora" and cfg.model.grounding.enabled
    torch.manual_seed(0)
    module = hydra.utils.instantiate(cfg.model)
    model = module.model
    assert isinstance(model.causal_lm, Qwen2ForCausalLM) and model.vocabulary is None
    tokens = list(model.grounding.tokens.tokens)
    rows = torch.tensor(module.tokenizer.convert_tokens_to_ids(["<oct>", "<cfp>", *tokens]))
    assert int(rows.max()) < 152064  # spare rows of the pretrained table, which no pretraining trained

    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.setup("fit")
    batch = InstructCollator(module.tokenizer.pad_token_id)([datamodule.datasets["train"][i] for i in range(4)])
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    deltas = [n for n in trainable if "trainable_tokens_delta" in n]
    assert len(deltas) == 2  # input embedding and output head rows of the added tokens
    assert not any("embed_tokens.base_layer.weight" in n or n.endswith("lm_head.weight") for n in trainable)
    optimizer = module.optimizer_factory(params=module.parameter_groups())
    model.train()
    for _ in range(2):
        optimizer.zero_grad()
        model(batch)["loss"].backward()
        optimizer.step()
    changed = {n for n, p in model.named_parameters() if n in trainable and not torch.equal(p, trainable[n])}
    assert set(deltas) <= changed and any("lora_B" in n for n in changed)

    model.eval()
    generation = hydra.utils.instantiate(cfg.data).build_dataset("test", generation=True)
    prompts = InstructCollator(module.tokenizer.pad_token_id, "left")([generation[0], generation[1]])
    reports = generate_batch(model, module.tokenizer, prompts, module.renderer, "auto", max_new_tokens=4)
    assert len(reports) == 2 and all(isinstance(r.text, str) for r in reports)

    export = export_mllm(module, tmp_path / "export", cfg)
    base = Qwen2ForCausalLM.from_pretrained(pretrained_folder)
    plain = PeftModel.from_pretrained(base, export / "adapter").eval()
    embedding = plain.get_input_embeddings()
    ours = model.causal_lm.get_input_embeddings()
    model.grounding._bypass = True  # compare the rows themselves, without values
    try:
        with torch.no_grad():
            torch.testing.assert_close(embedding(rows[None]), ours(rows[None]))
            ids = torch.tensor([[1, 2, 3, int(rows[0])]])
            torch.testing.assert_close(plain(input_ids=ids).logits, model.causal_lm(input_ids=ids).logits)
            pretrained_rows = Qwen2ForCausalLM.from_pretrained(pretrained_folder).get_input_embeddings()(rows[None])
            assert not torch.allclose(pretrained_rows, embedding(rows[None]))  # the adapter carries trained rows
    finally:
        model.grounding._bypass = False
    reloaded, _ = load_exported_mllm(export, {"llm.pretrained_path": str(pretrained_folder)})
    with torch.no_grad():
        torch.testing.assert_close(reloaded.model(batch)["loss"], model(batch)["loss"])
