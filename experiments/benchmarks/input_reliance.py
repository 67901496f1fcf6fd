"""Does a trained GROK MLLM use its inputs? Loss of the reference answers with the true inputs vs swapped ones.

    .venv/bin/python experiments/benchmarks/input_reliance.py [--model-dir artifacts/mllm] [--split val] [--n 64]

For each record of the split, the mean next-token loss of its reference answer is computed three times: with its own
images and prompt, with another eye's images (a fixed derangement), and with another eye's prompt (demographics and
systemic values). A model that reads its inputs loses more when they are swapped; equal losses mean the answers are
written from the training prior alone (what the tiny CPU default did before `llm.config.initializer_range` and
`fusion.input_norm` were set; see experiments/mllm/README.md). Prints the three losses and the gaps.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
from pathlib import Path

import torch

from grok.mllm.collator import InstructCollator
from grok.mllm.datamodule import InstructDataModule, InstructionDataset
from grok.mllm.export import load_exported_mllm
from grok.mllm.instructions import read_instructions


def mean_loss(module, records: list[dict], image_root: Path, transforms, cfg, batch_size: int) -> float:
    """Token-weighted mean loss of the records' reference answers."""
    dataset = InstructionDataset(
        records,
        module.tokenizer,
        image_root,
        transforms,
        system_prompt=cfg.get("system_prompt"),
        max_length=cfg.data.max_length,
        oct_slices=cfg.data.get("oct_slices"),
    )
    collate = InstructCollator(module.tokenizer.pad_token_id, "right")
    total, tokens = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            output = module.model(collate([dataset[i] for i in range(start, min(len(dataset), start + batch_size))]))
            total += output["loss"].item() * int(output["tokens"])
            tokens += int(output["tokens"])
    return total / max(tokens, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default="artifacts/mllm")
    parser.add_argument("--instructions", default="data/instructions")
    parser.add_argument("--split", default="val")
    parser.add_argument("--task", default="report")
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    module, cfg = load_exported_mllm(args.model_dir)
    instructions = Path(args.instructions)
    records = [r for r in read_instructions(instructions / f"{args.split}.jsonl") if r.get("task") == args.task]
    records = records[: args.n]
    if len(records) < 2:
        raise SystemExit(f"need at least two {args.task!r} records in {instructions}/{args.split}.jsonl")
    manifest = json.loads((instructions / "manifest.json").read_text(encoding="utf-8"))
    image_root = Path(cfg.data.get("image_root") or manifest["image_root"])
    transforms = InstructDataModule(
        instructions_dir=instructions, tokenizer=module.tokenizer, image_transforms=cfg.data.image_transforms
    ).transforms(train=False)
    order = list(range(len(records)))
    random.Random(args.seed).shuffle(order)
    other = {order[i]: order[(i + 1) % len(order)] for i in range(len(order))}  # a derangement
    swapped_images = [dict(r, images=records[other[i]]["images"]) for i, r in enumerate(records)]
    swapped_prompts = []
    for i, record in enumerate(records):
        record = copy.deepcopy(record)
        record["conversations"][0] = records[other[i]]["conversations"][0]
        swapped_prompts.append(record)
    losses = {
        name: mean_loss(module, recs, image_root, transforms, cfg, args.batch_size)
        for name, recs in (("own inputs", records), ("other images", swapped_images), ("other prompt", swapped_prompts))
    }
    print(f"{len(records)} {args.task} records of {args.split}; loss per supervised token")
    for name, value in losses.items():
        gap = value - losses["own inputs"]
        print(f"{name:14s} {value:.4f}" + ("" if name == "own inputs" else f"   gap {gap:+.4f}"))


if __name__ == "__main__":
    main()
