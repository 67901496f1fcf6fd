"""GrokMLLM: what trains (and what must not), the plain-peft adapter export, QLoRA on CPU, batched generation."""

from __future__ import annotations

import hydra
import pytest
import torch
from peft import PeftModel
from transformers import Qwen2Config, Qwen2ForCausalLM

from grok.mllm.chat import IGNORE_INDEX
from grok.mllm.collator import InstructCollator
from grok.mllm.export import export_mllm, load_exported_mllm
from grok.mllm.generate import generate_batch
from helpers import compose_config
from mllm_helpers import tiny_overrides, write_instruction_fixture

TINY_QWEN2 = {
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "vocab_size": 64,
}


@pytest.fixture(scope="module")
def instructions(tmp_path_factory):
    return write_instruction_fixture(tmp_path_factory.mktemp("mllm_data"))


@pytest.fixture
def config(instructions, tmp_path):
    def _make(*extra: str):
        return compose_config("mllm", tmp_path, tiny_overrides(instructions, list(extra)))

    return _make


def _train_batch(cfg, module):
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.setup("fit")
    dataset = datamodule.datasets["train"]
    return InstructCollator(module.tokenizer.pad_token_id)([dataset[i] for i in range(4)])


def _plain_ids(module, shape: tuple[int, int]) -> torch.Tensor:
    """Random token ids without quantity tokens (plain transformers cannot add their values)."""
    vocabulary = torch.arange(module.model.vocabulary.size)
    grounding = module.model.grounding
    if grounding is not None:
        vocabulary = vocabulary[grounding.symbol_of_row(vocabulary) < 0]
    return vocabulary[torch.randint(0, len(vocabulary), shape)]


def test_supervised_loss_equals_full_logits_cross_entropy_in_any_chunking(config) -> None:
    cfg = config()
    torch.manual_seed(0)
    module = hydra.utils.instantiate(cfg.model)
    model = module.model.eval()
    batch = _train_batch(cfg, module)
    with torch.no_grad():
        spliced = model.prepare_inputs(batch).spliced
        logits = model.causal_lm(
            inputs_embeds=spliced.inputs_embeds,
            attention_mask=spliced.attention_mask,
            position_ids=spliced.position_ids,
        ).logits
        targets = spliced.labels[:, 1:]
        compact = model.vocabulary.to_compact(targets)  # IGNORE_INDEX passes through, and cross_entropy skips it
        expected = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), compact.flatten())
        losses = []
        for chunk in (None, 3):
            model.loss_chunk_size = chunk
            outputs = model(batch)
            losses.append(outputs["loss"])
    assert outputs["tokens"] == (batch["labels"] != IGNORE_INDEX).sum() == (compact != IGNORE_INDEX).sum()
    for loss in losses:
        torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("fusion", ["paper", "cross_attention"])
def test_one_step_changes_lora_projectors_and_fusion_but_not_encoders_or_base(config, fusion) -> None:
    cfg = config(f"fusion={fusion}")
    torch.manual_seed(0)
    module = hydra.utils.instantiate(cfg.model)
    batch = _train_batch(cfg, module)
    before = {name: p.detach().clone() for name, p in module.model.named_parameters()}
    optimizer = module.optimizer_factory(params=module.parameter_groups())
    if fusion == "cross_attention":  # gates start at 0 (identity); open them so the attention weights get gradients
        module.model.fusion.gates.data.fill_(0.5)
        before = {name: p.detach().clone() for name, p in module.model.named_parameters()}
    module.model.train()

    def step() -> set[str]:
        optimizer.zero_grad()
        module.model(batch)["loss"].backward()
        optimizer.step()
        return {name for name, p in module.model.named_parameters() if not torch.equal(p, before[name])}

    changed = step()
    lora = {name for name in before if "lora_A" in name or "lora_B" in name}
    trained_copies = {name for name in before if "modules_to_save" in name}  # tiny default: embeddings/head
    fusion_names = {name for name in before if name.startswith("fusion.")}
    encoder_names = {name for name in before if name.startswith("encoders.")}
    grounding_names = {name for name in before if name.startswith("grounding.")}  # value embedding, read-out heads
    base = set(before) - lora - trained_copies - fusion_names - encoder_names - grounding_names
    assert lora and fusion_names and encoder_names and base and grounding_names
    assert {n for n in lora if "lora_B" in n} <= changed  # B starts at zero, so A's gradient is zero at step one
    assert fusion_names <= changed and trained_copies <= changed
    first = changed
    changed = step()
    assert lora <= changed  # every LoRA factor trains (the paper's public code froze them all)
    trained = {n.rsplit(".", 1)[0] for n in (first | changed) & grounding_names}
    assert "grounding.value_embedding.mlp.2" in trained, trained  # (the fixture states no image-derived value)
    assert not (changed & encoder_names), sorted(changed & encoder_names)[:3]
    assert not (changed & base), sorted(changed & base)[:3]


def test_paper_lr_override_puts_the_cfp_projector_in_its_own_group(config) -> None:
    cfg = config("model.learning_rates.language_model=2.0e-4")
    cfg.model.learning_rates.overrides = {"fusion.cfp_projector": 2.0e-5}  # as in experiment/mllm_paper.yaml
    module = hydra.utils.instantiate(cfg.model)
    groups = {group["lr"]: group["params"] for group in module.parameter_groups()}
    cfp_params = {id(p) for p in module.model.fusion.cfp_projector.parameters()}
    assert {id(p) for p in groups[2.0e-5]} == cfp_params
    in_lora_group = [n for n, p in module.model.named_parameters() if any(p is q for q in groups[2.0e-4])]
    assert in_lora_group and all("lora_" in n or "modules_to_save" in n for n in in_lora_group)


def test_exported_adapter_reloads_through_plain_peft_with_the_same_logits(config, tmp_path) -> None:
    cfg = config()
    torch.manual_seed(0)
    module = hydra.utils.instantiate(cfg.model)
    for name, parameter in module.model.language_model.named_parameters():
        if "lora_B" in name:  # make the adapter non-trivial
            torch.nn.init.normal_(parameter, std=0.1)
    export = export_mllm(module, tmp_path / "export", cfg)
    base = Qwen2ForCausalLM.from_pretrained(export / "base_model")
    plain = PeftModel.from_pretrained(base, export / "adapter").eval()
    ids = _plain_ids(module, (2, 12))
    module.model.eval()
    with torch.no_grad():
        ours = module.model.causal_lm(input_ids=ids).logits
        theirs = plain(input_ids=ids).logits
        without_adapter = Qwen2ForCausalLM.from_pretrained(export / "base_model")(input_ids=ids).logits
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(without_adapter, ours, atol=1e-4)

    reloaded, _ = load_exported_mllm(export)
    batch = _train_batch(cfg, module)
    with torch.no_grad():
        torch.testing.assert_close(reloaded.model(batch)["loss"], module.model(batch)["loss"])


def test_full_finetune_trains_every_language_model_weight_and_the_fusion_but_not_the_encoders(config) -> None:
    # a rate of its own, so its group is apart
    cfg = config("adaptation=full", "model.learning_rates.language_model=1.0e-3")
    torch.manual_seed(0)
    module = hydra.utils.instantiate(cfg.model)
    assert not hasattr(module.model.language_model, "peft_config")
    groups = {group["lr"]: group["params"] for group in module.parameter_groups()}
    language_model = {id(p) for p in module.model.language_model.parameters()}
    assert {id(p) for p in groups[cfg.model.learning_rates.language_model]} == language_model
    batch = _train_batch(cfg, module)
    before = {name: p.detach().clone() for name, p in module.model.named_parameters()}
    optimizer = module.optimizer_factory(params=module.parameter_groups())
    module.model.train()
    module.model(batch)["loss"].backward()
    optimizer.step()
    changed = {name for name, p in module.model.named_parameters() if not torch.equal(p, before[name])}
    llm_names = {name for name in before if name.startswith("language_model.")}
    encoder_names = {name for name in before if name.startswith("encoders.")}
    fusion_names = {name for name in before if name.startswith("fusion.")}
    assert llm_names and encoder_names and fusion_names
    assert llm_names <= changed and fusion_names <= changed
    assert not (changed & encoder_names)


def test_full_finetune_exports_a_plain_transformers_model(config, tmp_path) -> None:
    cfg = config("adaptation=full")
    torch.manual_seed(0)
    module = hydra.utils.instantiate(cfg.model)
    with torch.no_grad():
        for parameter in module.model.language_model.parameters():  # move away from the seeded random init
            parameter.add_(0.05 * torch.randn_like(parameter))
    export = export_mllm(module, tmp_path / "export", cfg)
    assert not (export / "adapter").exists() and not (export / "base_model").exists()
    plain = Qwen2ForCausalLM.from_pretrained(export / "language_model").eval()
    ids = _plain_ids(module, (2, 12))
    module.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(plain(input_ids=ids).logits, module.model.causal_lm(input_ids=ids).logits)
    reloaded, _ = load_exported_mllm(export)
    batch = _train_batch(cfg, module)
    with torch.no_grad():
        torch.testing.assert_close(reloaded.model(batch)["loss"], module.model(batch)["loss"])


def test_the_adaptation_is_the_adaptation_groups_choice_whatever_the_language_model(tmp_path) -> None:
    # the llm/ group never changes how the model is tuned: the same adaptation whatever the language model
    for mode in ("lora", "qlora", "full", "frozen"):
        tiny, real = (
            compose_config("mllm", tmp_path / f"{mode}-{llm}", [f"llm={llm}", f"adaptation={mode}"]).adaptation
            for llm in ("tiny_qwen2", "qwen2_7b")
        )
        assert tiny.mode == real.mode == mode
        assert {k: v for k, v in tiny.items() if k != "modules_to_save"} == {
            k: v for k, v in real.items() if k != "modules_to_save"
        }
    assert compose_config("mllm", tmp_path / "default", []).adaptation.mode == "full"  # the CPU default's choice
    assert compose_config("mllm", tmp_path / "lora", ["adaptation=lora"]).adaptation.r == 64  # lora.yaml's value
    assert "quantization" in compose_config("mllm", tmp_path / "qlora", ["adaptation=qlora"]).adaptation
    paper = compose_config("mllm", tmp_path / "paper", ["experiment=mllm_paper"])
    assert paper.adaptation.mode == "lora" and paper.adaptation.r == 128 and paper.fusion.input_norm is None
    assert compose_config("mllm", tmp_path / "fusion", []).fusion.input_norm == "batch"  # fusion/*.yaml's value


def test_adaptation_modes_refuse_what_they_cannot_train() -> None:
    from grok.mllm.adaptation import adapt_language_model

    with pytest.raises(ValueError, match=r"adaptation.mode='adapter' is not one of"):
        adapt_language_model(Qwen2ForCausalLM(Qwen2Config(**TINY_QWEN2)), mode="adapter")
    with pytest.raises(ValueError, match="only adaptation=qlora loads and trains a 4-bit model"):
        adapt_language_model(Qwen2ForCausalLM(Qwen2Config(**TINY_QWEN2)), mode="qlora")
    frozen = adapt_language_model(Qwen2ForCausalLM(Qwen2Config(**TINY_QWEN2)), mode="frozen")
    assert not any(p.requires_grad for p in frozen.parameters())


def test_full_finetune_refuses_a_4bit_model(config) -> None:
    from hydra.errors import InstantiationException

    cfg = config("adaptation=qlora", "adaptation.mode=full")
    with pytest.raises(InstantiationException, match="only adaptation=qlora loads and trains a 4-bit model"):
        hydra.utils.instantiate(cfg.model)


def test_full_finetune_with_tied_embeddings_exports_and_reloads(config, tmp_path) -> None:
    cfg = config("adaptation=full", "llm.config.tie_word_embeddings=true")
    torch.manual_seed(0)
    module = hydra.utils.instantiate(cfg.model)
    reloaded, _ = load_exported_mllm(export_mllm(module, tmp_path / "export", cfg))
    batch = _train_batch(cfg, module)
    module.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded.model(batch)["loss"], module.model(batch)["loss"])


def test_qlora_forward_and_backward_on_cpu(config) -> None:
    import bitsandbytes as bnb

    cfg = config("adaptation=qlora", "adaptation.r=4", "adaptation.alpha=8")
    module = hydra.utils.instantiate(cfg.model)
    quantized = [m for m in module.model.causal_lm.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert quantized and quantized[0].weight.quant_type == "nf4"
    batch = _train_batch(cfg, module)
    loss = module.model(batch)["loss"]
    loss.backward()
    assert torch.isfinite(loss)
    lora_grads = [p.grad for n, p in module.model.named_parameters() if "lora_B" in n]  # A's is 0 while B == 0
    assert lora_grads and all(g is not None and g.abs().sum() > 0 for g in lora_grads)
    # the gradient flows back through the 4-bit layers to the projectors
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.model.fusion.parameters())


def test_batched_left_padded_generation_equals_one_by_one(config) -> None:
    cfg = config()
    torch.manual_seed(0)
    module = hydra.utils.instantiate(cfg.model).eval()
    datamodule = hydra.utils.instantiate(cfg.data)
    dataset = datamodule.build_dataset("test", generation=True)
    items = [dataset[i] for i in range(3)]
    collate = InstructCollator(module.tokenizer.pad_token_id, "left")
    renderer = module.renderer
    together = generate_batch(module.model, module.tokenizer, collate(items), renderer, max_new_tokens=6)
    alone = [
        generate_batch(module.model, module.tokenizer, collate([item]), renderer, max_new_tokens=6)[0] for item in items
    ]
    assert together == alone
    assert all(isinstance(report.text, str) and report.text for report in together)


def test_batch_input_norm_standardises_tokens_that_share_a_large_constant() -> None:
    from grok.mllm.projector import build_input_norm

    torch.manual_seed(0)
    shared = torch.randn(1, 1, 16) * 8  # image-independent part, much larger than the image-dependent one
    tokens = shared + 0.1 * torch.randn(6, 5, 16)
    norm = build_input_norm(16, "batch").train()
    standardised = norm(tokens).reshape(-1, 16)
    torch.testing.assert_close(standardised.mean(0), torch.zeros(16), atol=1e-4, rtol=0)
    torch.testing.assert_close(standardised.std(0, unbiased=False), torch.ones(16), atol=1e-3, rtol=0)
    assert isinstance(build_input_norm(16, None), torch.nn.Identity)
    with pytest.raises(ValueError, match="input_norm"):
        build_input_norm(16, "layer")


def test_position_input_norm_leaves_only_what_differs_between_images() -> None:
    from grok.mllm.projector import build_input_norm

    torch.manual_seed(0)
    per_position = torch.randn(1, 5, 16) * 8  # differs between positions, shared by every image
    tokens = per_position + 0.1 * torch.randn(6, 5, 16)
    across_images = {
        kind: build_input_norm(16, kind, num_tokens=5).train()(tokens).var(0, unbiased=False).mean().item()
        for kind in ("batch", "position")
    }
    assert across_images["position"] == pytest.approx(1.0, abs=0.01)  # BatchNorm eps
    assert across_images["batch"] < 0.01  # per-feature statistics leave the per-position part dominant
    single = build_input_norm(16, "position", num_tokens=5).train()
    torch.testing.assert_close(single(tokens[:1]), tokens[:1] / (1 + 1e-5) ** 0.5)  # running stats at init: 0, 1
    with pytest.raises(ValueError, match="5 tokens of width 16"):
        build_input_norm(16, "position", num_tokens=5)(torch.randn(2, 7, 16))
    with pytest.raises(ValueError, match="token count"):
        build_input_norm(16, "position")


@pytest.mark.parametrize("kind", ["batch", "position"])
def test_input_norm_statistics_travel_with_the_export(config, tmp_path, kind) -> None:
    cfg = config(f"fusion.input_norm={kind}")
    torch.manual_seed(0)
    module = hydra.utils.instantiate(cfg.model)
    batch = _train_batch(cfg, module)
    module.model.train()
    module.model(batch)  # one training forward updates the running statistics
    running = module.model.fusion.oct_norm.norm.running_mean.clone()
    assert running.abs().sum() > 0
    assert "model.fusion.oct_norm.norm.running_mean" in module.trainable_state_dict()
    reloaded, _ = load_exported_mllm(export_mllm(module, tmp_path / "export", cfg))
    torch.testing.assert_close(reloaded.model.fusion.oct_norm.norm.running_mean, running)
    module.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded.model(batch)["loss"], module.model(batch)["loss"])
