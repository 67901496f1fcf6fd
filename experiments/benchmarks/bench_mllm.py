"""Training throughput and peak memory: GROK's MLLM step vs a plain Hugging Face Trainer + peft LLaVA-style loop.

Both sides use the same tiny Qwen2 (hidden, layers, heads from conf/llm/tiny_qwen2.yaml), the same encoders, fusion,
LoRA settings, data and batch size. The baseline does what a LLaVA-style HF Trainer recipe does: the full
151,936-row Qwen2 vocabulary, logits for every position (the HF loss), images encoded at every step. Ours: the
trimmed vocabulary, the output head applied only at supervised positions, frozen-encoder features cached once.
Each side runs in its own process so peak RSS is its own.

    .venv/bin/python experiments/benchmarks/bench_mllm.py --instructions data/instructions --steps 12

Timings on a shared CPU are noisy; the script prints `uptime` load with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[2]


def _config(instructions: Path, root: Path, trim: bool, cache: bool, batch_size: int):
    sys.path.insert(0, str(ROOT / "tests"))
    from helpers import compose_config

    overrides = [
        f"paths.instructions_dir={instructions}",
        "oct_encoder.allow_unaligned=true",
        f"llm.trim_vocabulary={str(trim).lower()}",
        f"model.feature_cache.enabled={str(cache).lower()}",
        f"data.batch_size={batch_size}",
        "+data.max_records.train=256",
        "model.vocabulary.corpus=[" + str(instructions / "train.jsonl") + "]",
        "adaptation=lora",  # the baseline is a peft LoRA loop: LoRA on our side too (the tiny default is full)
        "adaptation.dropout=0.0",
    ]
    # a random full-vocabulary base: train embeddings/head as the tiny base does under adaptation=lora, all 151,936 rows
    if not trim:
        overrides.append("llm.lora_modules_to_save=[embed_tokens,lm_head]")
    return compose_config("mllm", root, overrides)


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_ours(instructions: Path, steps: int, warmup: int, batch_size: int) -> dict:
    """Our step: trimmed vocabulary, supervised-position loss, cached encoder features (plain loop, AdamW)."""
    import hydra
    import torch

    root = Path(tempfile.mkdtemp())
    cfg = _config(instructions, root, trim=True, cache=True, batch_size=batch_size)
    torch.manual_seed(0)
    module = hydra.utils.instantiate(cfg.model)
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.setup("fit")
    started = time.perf_counter()
    from grok.mllm.encoders import transform_settings
    from grok.mllm.feature_cache import cached_features, encoder_fingerprint

    dataset = datamodule.datasets["train"]
    for modality, encoder in module.model.encoders.items():
        fingerprint = encoder_fingerprint(encoder, transform_settings(encoder, modality))
        dataset.features[modality] = cached_features(
            lambda pixels, m=modality: module.model.encode_images(m, pixels),
            dataset.image_items(modality),
            lambda key, m=modality, d=dataset: d.load_image(m, key),
            root / f"{modality}-{fingerprint}.safetensors",
        )
    cache_seconds = time.perf_counter() - started
    optimizer = module.optimizer_factory(params=module.parameter_groups())
    return _loop(module.model, datamodule.train_dataloader(), optimizer, steps, warmup) | {
        "feature_cache_build_s": round(cache_seconds, 2),
        "vocab_rows": module.model.vocabulary.size,
    }


def _loop(model, loader, optimizer, steps: int, warmup: int) -> dict:
    import torch

    model.train()
    batches = iter(loader)
    samples, tokens, started = 0, 0, None
    for step in range(warmup + steps):
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(loader)
            batch = next(batches)
        if step == warmup:
            started = time.perf_counter()
        loss = model(batch)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= warmup:
            samples += batch["input_ids"].shape[0]
            tokens += int(batch["attention_mask"].sum())
    elapsed = time.perf_counter() - started
    del torch
    return {"samples_per_s": samples / elapsed, "text_tokens_per_s": tokens / elapsed, "steps": steps}


def run_hf(instructions: Path, steps: int, warmup: int, batch_size: int) -> dict:
    """Plain HF Trainer + peft, LLaVA-style: full vocabulary, full logits, images encoded every step."""
    import hydra
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    root = Path(tempfile.mkdtemp())
    cfg = _config(instructions, root, trim=False, cache=False, batch_size=batch_size)
    torch.manual_seed(0)
    module = hydra.utils.instantiate(cfg.model)
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.setup("fit")
    grok_model = module.model

    class LlavaStyle(torch.nn.Module):
        """LLaVA's recipe: splice, then the causal LM's own loss over logits at every position."""

        def __init__(self) -> None:
            super().__init__()
            self.inner = grok_model

        def forward(self, **batch):
            spliced = self.inner.prepare_inputs(batch, padding_side="right").spliced
            return self.inner.causal_lm(
                inputs_embeds=spliced.inputs_embeds,
                attention_mask=spliced.attention_mask,
                position_ids=spliced.position_ids,
                labels=spliced.labels,
            )

    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            times.append(time.perf_counter())

        def on_train_end(self, args, state, control, **kwargs):
            times.append(time.perf_counter())

    collate = datamodule.train_dataloader().collate_fn
    arguments = TrainingArguments(
        output_dir=str(root / "hf"),
        per_device_train_batch_size=batch_size,
        max_steps=warmup + steps,
        learning_rate=float(cfg.model.learning_rates.language_model),
        lr_scheduler_type="constant",
        weight_decay=0.0,
        logging_steps=10**6,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=LlavaStyle(),
        args=arguments,
        train_dataset=datamodule.datasets["train"],
        data_collator=lambda items: {k: v for k, v in collate(items).items() if k != "ids"},
        callbacks=[Timer()],
    )
    trainer.train()
    elapsed = times[-1] - times[warmup]
    return {
        "samples_per_s": steps * batch_size / elapsed,
        "steps": steps,
        "vocab_rows": grok_model.causal_lm.config.vocab_size,
    }


def image_seconds_per_epoch(instructions: Path, batch_size: int) -> dict:
    """Seconds one epoch spends producing visual tokens: reading + encoding images vs serving cached features."""
    import hydra
    import torch

    root = Path(tempfile.mkdtemp())
    cfg = _config(instructions, root, trim=True, cache=False, batch_size=batch_size)
    module = hydra.utils.instantiate(cfg.model)
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.setup("fit")
    model = module.model

    def epoch() -> float:
        started = time.perf_counter()
        with torch.no_grad():
            for batch in datamodule.train_dataloader():
                model.fused_tokens(batch)
        return time.perf_counter() - started

    without_cache = epoch()
    started = time.perf_counter()
    from grok.mllm.encoders import transform_settings
    from grok.mllm.feature_cache import cached_features, encoder_fingerprint

    dataset = datamodule.datasets["train"]
    for modality, encoder in model.encoders.items():
        fingerprint = encoder_fingerprint(encoder, transform_settings(encoder, modality))
        dataset.features[modality] = cached_features(
            lambda pixels, m=modality: model.encode_images(m, pixels),
            dataset.image_items(modality),
            lambda key, m=modality, d=dataset: d.load_image(m, key),
            root / f"{modality}-{fingerprint}.safetensors",
        )
    build = time.perf_counter() - started
    return {"uncached_s": without_cache, "cached_s": epoch(), "cache_build_s": build, "records": len(dataset)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instructions", type=Path, default=ROOT / "data" / "instructions")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--side", choices=["ours", "hf", "cache"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side == "cache":
        print("RESULT " + json.dumps(image_seconds_per_epoch(args.instructions.resolve(), args.batch_size)))
        return
    if args.side:
        runner = run_ours if args.side == "ours" else run_hf
        result = runner(args.instructions.resolve(), args.steps, args.warmup, args.batch_size)
        print("RESULT " + json.dumps(result | {"peak_rss_mib": round(_peak_rss_mib(), 1)}))
        return
    if not (args.instructions / "train.jsonl").is_file():
        raise SystemExit(f"{args.instructions}/train.jsonl not found: run `make data` or pass --instructions")
    results = {}
    for side in ("hf", "ours", "cache"):
        command = [sys.executable, __file__, "--side", side, "--instructions", str(args.instructions)]
        command += ["--steps", str(args.steps), "--warmup", str(args.warmup), "--batch-size", str(args.batch_size)]
        output = subprocess.run(command, capture_output=True, text=True, check=False)
        line = next((line for line in output.stdout.splitlines() if line.startswith("RESULT ")), None)
        if line is None:
            raise SystemExit(f"{side} run failed:\n{output.stderr[-3000:]}")
        results[side] = json.loads(line[len("RESULT ") :])
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores; batch {args.batch_size}")
    for side, label in (("hf", "HF Trainer + peft, LLaVA-style"), ("ours", "GROK InstructModule step")):
        r = results[side]
        print(
            f"{label:34s} {r['samples_per_s']:7.2f} samples/s  "
            f"peak RSS {r['peak_rss_mib']:8.1f} MiB  vocab {r['vocab_rows']}"
        )
    print(
        f"speed-up: {results['ours']['samples_per_s'] / results['hf']['samples_per_s']:.2f}x  "
        f"(feature cache built once in {results['ours']['feature_cache_build_s']} s, not counted per step)"
    )
    cache = results["cache"]
    print(
        f"visual tokens for one epoch of {cache['records']} conversations: {cache['uncached_s']:.2f} s reading + "
        f"encoding images vs {cache['cached_s']:.2f} s from the feature cache (built once in "
        f"{cache['cache_build_s']:.2f} s)"
    )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
