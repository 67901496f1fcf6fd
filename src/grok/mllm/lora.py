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
) -> PreTrainedModel | PeftModel:
    """Freeze the base language model and add LoRA adapters to `target_modules` ("all-linear" = every linear layer
    of the decoder, never the output head); `modules_to_save` are trained in full and saved with the adapter (the tiny
    random default trains `embed_tokens` and `lm_head`, which a random base cannot leave frozen). With
    `enabled=False` the language model stays frozen and unadapted.
    A 4-bit model (QLoRA) first goes through peft's `prepare_model_for_kbit_training`.
    """
    if getattr(language_model, "is_loaded_in_4bit", False):
        language_model = prepare_model_for_kbit_training(
            language_model,
            use_gradient_checkpointing=gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    elif gradient_checkpointing:
        language_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if not enabled:
        language_model.requires_grad_(False)
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
