"""How the language model is tuned (`adaptation.mode`): peft LoRA, QLoRA, full fine-tuning or frozen."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training
from transformers import PreTrainedModel

log = logging.getLogger(__name__)

MODES = ("lora", "qlora", "full", "frozen")


def adapt_language_model(
    language_model: PreTrainedModel,
    mode: str = "lora",
    r: int = 8,
    alpha: int = 16,
    dropout: float = 0.0,
    target_modules: str | Sequence[str] = "all-linear",
    modules_to_save: Sequence[str] | None = None,
    train_new_tokens: Sequence[str] | None = None,
    new_token_rows: Sequence[int] = (),
    gradient_checkpointing: bool = False,
    pretrained: bool = False,
) -> PreTrainedModel | PeftModel:
    """Make `language_model` trainable as `mode` says.

    - `lora`: freeze the base and add peft LoRA adapters to `target_modules` ("all-linear" = every linear layer of the
      decoder, never the output head); `modules_to_save` train in full and are saved with the adapter (a random base's
      `embed_tokens`/`lm_head`, which cannot stay random and frozen).
      `train_new_tokens` names the modules (`embed_tokens`, `lm_head`) whose `new_token_rows` (the rows of the tokens
      GROK adds: image placeholders, quantity tokens) train beside the adapter and are saved with it (peft
      `trainable_token_indices`); a pretrained base has no trained rows for them. Modules in `modules_to_save` train
      in full already and are skipped.
    - `qlora`: the same on a model loaded in 4-bit (peft's `prepare_model_for_kbit_training` first).
    - `full`: no adapter, every weight trains (the tiny random base's default: LoRA keeps a pretrained base intact,
      which a random base does not need, and on it LoRA learned far more slowly).
    - `frozen`: no adapter, nothing of the language model trains.
    """
    if mode not in MODES:
        raise ValueError(f"adaptation.mode={mode!r} is not one of {list(MODES)}")
    quantized = bool(getattr(language_model, "is_loaded_in_4bit", False))
    if quantized != (mode == "qlora"):
        raise ValueError(
            f"adaptation.mode={mode!r} on a {'4-bit' if quantized else 'full-precision'} language model: only "
            "adaptation=qlora loads and trains a 4-bit model"
        )
    if quantized:
        language_model = prepare_model_for_kbit_training(
            language_model,
            use_gradient_checkpointing=gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    elif gradient_checkpointing:
        language_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if mode in ("full", "frozen"):
        language_model.requires_grad_(mode == "full")
        if mode == "full" and pretrained:
            log.warning(
                "adaptation=full trains all %.2fB weights of the pretrained language model (the paper tunes Qwen2-7B "
                "with adaptation=lora: experiment=mllm_paper)",
                sum(p.numel() for p in language_model.parameters()) / 1e9,
            )
        return language_model
    targets = target_modules if isinstance(target_modules, str) else list(target_modules)
    saved = set(modules_to_save or ())
    token_modules = [name for name in (train_new_tokens or ()) if name not in saved]
    rows = sorted({int(row) for row in new_token_rows})
    trainable_tokens = {name: rows for name in token_modules} if rows else {}
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=targets,
        modules_to_save=list(modules_to_save) if modules_to_save else None,
        trainable_token_indices=trainable_tokens or None,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(language_model, config)
