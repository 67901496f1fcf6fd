"""Part (a) of the GPU check: LoRA / QLoRA training steps of the paper-size GROK model, timed, with model FLOPs.

The model is built straight on the device with random weights (nothing downloaded, no CPU copy first): a Qwen2
causal LM from `steps.language_model` (Qwen2-7B's config), two frozen RetinaViT encoders (ViT-L/16, RETFound and
RetiZero size) and the paper's fusion. A step is one conversation per row: an OCT and a CFP image (their 2 x 196
patch tokens projected by the fusion) followed by random text ids, `seq_len` positions in all, loss on the text.

Model FLOPs per step (what MFU counts; gradient-checkpointing recomputation is not counted, as in MFU, not HFU):
    2·N_base·T (forward) + 2·N_base·T (input gradients; the frozen base gets no weight gradients)
    + 6·N_trainable·T_trainable (LoRA adapters over T, fusion over the visual tokens: forward + both gradients)
    + 3 · 4·L·T²·d (attention scores and values, forward + backward, full T², not halved for causality, as PaLM)
    + encoders' forward (2·N_vit·tokens + 4·depth·tokens²·d per image, no backward: frozen)
where N_base counts the language model's matrix weights (every decoder linear and the output head, not the input
embedding), T the tokens of the batch and d the hidden width. `mfu_6n` uses the 6·N·T convention for the base
instead (as if it were fully fine-tuned) for comparison with papers that quote it.
"""

from __future__ import annotations

import gc
import logging
import time
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

log = logging.getLogger(__name__)
GIB = 2**30


def peak_tflops(device_name: str, table: list[dict[str, Any]]) -> float | None:
    """The dense bf16 peak of `device_name` from `table` (first case-insensitive `match` it contains), else None."""
    for row in table:
        if str(row["match"]).lower() in device_name.lower():
            return float(row["tflops"])
    return None


def language_model_flops(config: Any, tokens: int, seq_len: int) -> dict[str, float]:
    """N_base (matrix weights of the decoder and the output head) and the attention FLOPs of one forward."""
    hidden, layers = config.hidden_size, config.num_hidden_layers
    head_dim = getattr(config, "head_dim", None) or hidden // config.num_attention_heads
    q_dim, kv_dim = config.num_attention_heads * head_dim, config.num_key_value_heads * head_dim
    per_layer = hidden * q_dim * 2 + hidden * kv_dim * 2 + 3 * hidden * config.intermediate_size
    n_base = layers * per_layer + hidden * config.vocab_size
    sequences = tokens // seq_len
    attention_forward = sequences * 4 * layers * seq_len**2 * q_dim
    return {"n_base": float(n_base), "attention_forward": float(attention_forward)}


def encoder_forward_flops(encoder: nn.Module, images: int) -> float:
    """Forward FLOPs of a ViT on `images` images: its matrix weights over every token, plus attention."""
    weights = sum(m.weight.numel() for m in encoder.modules() if isinstance(m, nn.Linear | nn.Conv2d))
    tokens = encoder.patch_embed.num_patches + getattr(encoder, "num_prefix_tokens", 1)
    depth, width = len(encoder.blocks), encoder.embed_dim
    return float(images * (2 * weights * tokens + 4 * depth * tokens**2 * width))


def _quantize_linears(model: nn.Module, quantization: DictConfig, device: torch.device) -> int:
    """Replace every decoder nn.Linear (not the output head) by a bitsandbytes 4-bit layer, one at a time, so the
    full-precision copy of each weight is freed as soon as it is quantized. Returns the number replaced."""
    import bitsandbytes as bnb

    compute_dtype = getattr(torch, quantization.compute_dtype)
    replaced = 0
    for parent in list(model.model.layers.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, nn.Linear):
                continue
            layer = bnb.nn.Linear4bit(
                child.in_features,
                child.out_features,
                bias=child.bias is not None,
                compute_dtype=compute_dtype,
                compress_statistics=bool(quantization.double_quant),
                quant_type=quantization.quant_type,
                device="meta",
            )
            weight = child.weight.data
            layer.weight = bnb.nn.Params4bit(
                weight, requires_grad=False, quant_type=quantization.quant_type,
                compress_statistics=bool(quantization.double_quant),
            ).to(device)  # fmt: skip
            if child.bias is not None:
                layer.bias = nn.Parameter(child.bias.data.to(compute_dtype), requires_grad=False)
            setattr(parent, name, layer)
            del child, weight
            replaced += 1
    model.is_loaded_in_4bit = True  # what peft (and grok.mllm.adaptation) read to treat the model as 4-bit
    return replaced


def _build(cfg: DictConfig, run: DictConfig, device: torch.device) -> dict[str, Any]:
    """Language model (adapted as `run` says), frozen encoders and trainable fusion, all on `device`."""
    from transformers import Qwen2ForCausalLM

    dtype = getattr(torch, cfg.steps.dtype)
    config = hydra.utils.instantiate(cfg.steps.language_model)
    config._attn_implementation = cfg.steps.attn_implementation
    with torch.device(device):
        language_model = Qwen2ForCausalLM._from_config(config, dtype=dtype)
        encoders = {}
        for name, node in cfg.steps.encoders.items():
            encoders[name] = hydra.utils.instantiate(node).to(dtype).eval().requires_grad_(False)
    language_model.requires_grad_(False)
    quantized = 0
    if run.quantization is not None:
        quantized = _quantize_linears(language_model, run.quantization, device)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    adapted = hydra.utils.instantiate(run.adaptation)(language_model)
    with torch.device(device):
        fusion = hydra.utils.instantiate(cfg.steps.fusion)(
            oct_dim=encoders["oct"].embed_dim, cfp_dim=encoders["cfp"].embed_dim, llm_dim=config.hidden_size
        )
    return {"lm": adapted, "config": config, "encoders": encoders, "fusion": fusion, "quantized_linears": quantized}


def _batch(cfg: DictConfig, parts: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
    generator = torch.Generator(device="cpu").manual_seed(int(cfg.seed))
    batch, seq_len = int(cfg.steps.batch_size), int(cfg.steps.seq_len)
    images = {
        name: torch.randn(batch, 3, enc.patch_embed.img_size[0], enc.patch_embed.img_size[1], generator=generator)
        for name, enc in parts["encoders"].items()
    }
    visual = sum(enc.patch_embed.num_patches for enc in parts["encoders"].values())
    if visual >= seq_len:
        raise ValueError(f"steps.seq_len={seq_len} leaves no text after {visual} visual tokens")
    text = torch.randint(0, parts["config"].vocab_size, (batch, seq_len - visual), generator=generator)
    return {**{k: v.to(device) for k, v in images.items()}, "text": text.to(device), "visual": visual}


def _step(parts: dict[str, Any], batch: dict[str, Any], optimizer, autocast: bool, device: torch.device) -> float:
    lm, encoders, fusion = parts["lm"], parts["encoders"], parts["fusion"]
    dtype = next(iter(encoders.values())).cls_token.dtype
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        with torch.no_grad():
            oct_tokens = encoders["oct"].encode(batch["oct"].to(dtype)).patch_tokens
            cfp_tokens = encoders["cfp"].encode(batch["cfp"].to(dtype)).patch_tokens
        oct_out, cfp_out = fusion(oct_tokens.float(), cfp_tokens.float())
        text_embeds = lm.get_input_embeddings()(batch["text"])
        embeds = torch.cat([oct_out.to(text_embeds.dtype), cfp_out.to(text_embeds.dtype), text_embeds], dim=1)
        ignored = torch.full((batch["text"].shape[0], batch["visual"]), -100, device=device)
        labels = torch.cat([ignored, batch["text"]], dim=1)
        loss = lm(inputs_embeds=embeds, labels=labels).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def measure_run(cfg: DictConfig, name: str, device: torch.device, peak: float | None) -> dict[str, Any]:
    """Build, warm up and time one entry of `steps.runs`; the figures of the JSON's `steps.<name>`."""
    run = cfg.steps.runs[name]
    cuda = device.type == "cuda"
    torch.manual_seed(int(cfg.seed))
    started = time.perf_counter()
    parts = _build(cfg, run, device)
    if cuda:
        torch.cuda.synchronize()
    build_s = time.perf_counter() - started
    build_peak = torch.cuda.max_memory_allocated() / GIB if cuda else None
    trainable = [p for p in parts["lm"].parameters() if p.requires_grad] + list(parts["fusion"].parameters())
    optimizer = hydra.utils.instantiate(cfg.steps.optimizer)(params=trainable)
    batch = _batch(cfg, parts, device)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    losses, times = [], []
    for index in range(int(cfg.steps.warmup_steps) + int(cfg.steps.timed_steps)):
        if cuda:
            torch.cuda.synchronize()
        tick = time.perf_counter()
        losses.append(_step(parts, batch, optimizer, bool(cfg.steps.autocast), device))
        if cuda:
            torch.cuda.synchronize()
        if index >= int(cfg.steps.warmup_steps):
            times.append(time.perf_counter() - tick)
    step_s = sorted(times)[len(times) // 2]  # the median step
    tokens = int(cfg.steps.batch_size) * int(cfg.steps.seq_len)
    lm_flops = language_model_flops(parts["config"], tokens, int(cfg.steps.seq_len))
    n_lora = sum(p.numel() for n, p in parts["lm"].named_parameters() if p.requires_grad and "lora_" in n)
    n_fusion = sum(p.numel() for p in parts["fusion"].parameters())
    images = int(cfg.steps.batch_size)
    encoders = sum(encoder_forward_flops(enc, images) for enc in parts["encoders"].values())
    shared = 6 * n_lora * tokens + 6 * n_fusion * batch["visual"] * images + 3 * lm_flops["attention_forward"]
    flops = 4 * lm_flops["n_base"] * tokens + shared + encoders
    flops_6n = 6 * lm_flops["n_base"] * tokens + shared + encoders
    figures = {
        "status": "ok",
        "seq_len": int(cfg.steps.seq_len),
        "batch_size": int(cfg.steps.batch_size),
        "visual_tokens": int(batch["visual"]),
        "gradient_checkpointing": bool(run.adaptation.gradient_checkpointing),
        "quantized_linears": parts["quantized_linears"],
        "base_matrix_params": int(lm_flops["n_base"]),
        "trainable_params": int(sum(p.numel() for p in trainable)),
        "build_s": round(build_s, 2),
        "build_peak_memory_gib": round(build_peak, 2) if build_peak is not None else None,
        "step_s": round(step_s, 4),
        "tokens_per_s": round(tokens / step_s, 1),
        "model_flops_per_step": flops,
        "model_tflops_per_s": round(flops / step_s / 1e12, 2),
        "mfu": round(flops / step_s / (peak * 1e12), 4) if peak else None,
        "mfu_6n": round(flops_6n / step_s / (peak * 1e12), 4) if peak else None,
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / GIB, 2) if cuda else None,
        "losses": [round(x, 4) for x in losses],
    }
    del parts, optimizer, batch, trainable
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    log.info("steps.%s: %s", name, OmegaConf.to_yaml(OmegaConf.create(figures)).strip().replace("\n", "; "))
    return figures
