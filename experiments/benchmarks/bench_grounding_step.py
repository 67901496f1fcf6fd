"""Stage-three training step of the default with grounding (`grounding=auto`) vs without (`grounding=none`, the
free-digit model before grounding), on the same batches' records, in one run.

    .venv/bin/python experiments/benchmarks/bench_grounding_step.py --instructions data/instructions --steps 30

Each side: the default `conf/mllm.yaml` model (tiny Qwen2, full fine-tuning, cached frozen features), AdamW, the
same training records in the same order; steps alternate between the sides so machine load hits both alike. Prints
the median step time of each side and their ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[2]


def _side(instructions: Path, root: Path, grounding: str, batch_size: int, steps: int):
    import hydra
    import torch

    sys.path.insert(0, str(ROOT / "tests"))
    from grok.mllm.collator import InstructCollator
    from grok.mllm.encoders import transform_settings
    from grok.mllm.feature_cache import cached_features, encoder_fingerprint
    from helpers import compose_config

    cfg = compose_config(
        "mllm",
        root,
        [f"paths.instructions_dir={instructions}", "oct_encoder.allow_unaligned=true", f"grounding={grounding}"],
    )
    torch.manual_seed(0)
    module = hydra.utils.instantiate(cfg.model)
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.setup("fit")
    dataset = datamodule.datasets["train"]
    loader = datamodule.datasets["val"]
    for modality, encoder in module.model.encoders.items():  # frozen features once, as training's feature cache
        features = cached_features(
            lambda pixels, m=modality: module.model.encode_images(m, pixels),
            datamodule.image_items(modality),
            lambda key, m=modality: loader.load_image(m, key),
            root / f"{modality}-{encoder_fingerprint(encoder, transform_settings(encoder, modality))}.safetensors",
            description=f"caching {modality} features",
        )
        datamodule.attach_features(modality, features)
    collate = InstructCollator(module.tokenizer.pad_token_id)
    batches = [collate([dataset[(s * batch_size + i) % len(dataset)] for i in range(batch_size)]) for s in range(steps)]
    optimizer = module.optimizer_factory(params=module.parameter_groups())
    module.model.train()

    def step(index: int) -> float:
        start = time.perf_counter()
        optimizer.zero_grad()
        module.model(batches[index])["loss"].backward()
        optimizer.step()
        return time.perf_counter() - start

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instructions", type=Path, default=ROOT / "data" / "instructions")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sides = {
            name: _side(args.instructions.resolve(), Path(tmp) / name, name, args.batch_size, args.steps)
            for name in ("auto", "none")
        }
        times: dict[str, list[float]] = {name: [] for name in sides}
        for index in range(args.steps):
            for name, step in sides.items():
                seconds = step(index)
                if index >= args.warmup:
                    times[name].append(seconds)
    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"load: {os.getloadavg()[0]:.2f}; {args.steps - args.warmup} timed steps of batch {args.batch_size} each")
    for name, seconds in median.items():
        print(f"grounding={name:<5} median step {seconds * 1000:7.1f} ms")
    print(f"ratio grounded / free digits: {median['auto'] / median['none']:.3f}")


if __name__ == "__main__":
    main()
