"""peft LoRA scoped to the language model (QLoRA when the model was loaded in 4-bit)."""

from __future__ import annotations

from collections.abc import Sequence

from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training
from transformers import PreTrainedModel


def apply_lora(
    language_model: PreTrainedModel,
    enabled: bool = True,
    r: int = 8,
    alpha: int = 16,
    dropout: float = 0.0,
    target_modules: str | Sequence[str] = "all-linear",
    modules_to_save: Sequence[str] | None = None,
    gradient_checkpointing: bool = False,
    full_finetune: bool = False,
) -> PreTrainedModel | PeftModel:
    """Freeze the base language model and add LoRA adapters to `target_modules` ("all-linear" = every linear layer
    of the decoder, never the output head); `modules_to_save` are trained in full and saved with the adapter (the tiny
    random default trains `embed_tokens` and `lm_head`, which a random base cannot leave frozen). With
    `enabled=False` there is no adapter: the language model stays frozen, or with `full_finetune=True` every one of
    its weights trains (`lora=full`, the tiny random base's default: LoRA keeps a pretrained base intact, which a
    random base does not need, and on it LoRA learned far more slowly; see docs/mllm.md).
    A 4-bit model (QLoRA) first goes through peft's `prepare_model_for_kbit_training`.
    """
    if enabled and full_finetune:
        raise ValueError("lora.enabled=true and lora.full_finetune=true exclude each other: pick lora or full")
    if full_finetune and getattr(language_model, "is_loaded_in_4bit", False):
        raise ValueError("lora.full_finetune=true cannot train a 4-bit (QLoRA) model's weights")
    if getattr(language_model, "is_loaded_in_4bit", False):
        language_model = prepare_model_for_kbit_training(
            language_model,
            use_gradient_checkpointing=gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    elif gradient_checkpointing:
        language_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if not enabled:
        language_model.requires_grad_(full_finetune)
        return language_model
    targets = target_modules if isinstance(target_modules, str) else list(target_modules)
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=targets,
        modules_to_save=list(modules_to_save) if modules_to_save else None,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(language_model, config)
