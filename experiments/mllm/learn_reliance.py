"""How fast does an MLLM configuration learn to read its images? A short training run on the `diagnosis` task.

    .venv/bin/python experiments/mllm/learn_reliance.py --steps 600 [hydra overrides of conf/mllm.yaml ...]
    .venv/bin/python experiments/mllm/learn_reliance.py --steps 600 fusion.input_norm=null \
        llm.config.initializer_range=0.02 lora=lora lora.dropout=0.05    # the settings of the first CPU default

Trains the model of `conf/mllm.yaml` (plus overrides) on `--train` diagnosis conversations of the train split with
random batches, and every `--every` steps scores `--held` other eyes twice: with their own images and with the
images rolled by one within each batch. The gap (rolled minus own, loss per supervised token) is the image reliance
the model has learned on eyes it never saw; it stays at ~0 when the answers come from the training prior alone.
Uses `paths.root_dir` data (run `make data` and `make train-align` first). One CPU thread by default, so two
configurations can run side by side on two cores.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import hydra
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from grok.mllm.collator import InstructCollator
from grok.utils.config import config_dir


def compose_mllm(overrides: list[str], run_dir: Path):
    """`conf/mllm.yaml` composed as Hydra would, with this run's output folder."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("mllm", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    return cfg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--every", type=int, default=150)
    parser.add_argument("--train", type=int, default=384, help="train conversations sampled from")
    parser.add_argument("--held", type=int, default=64, help="held-out conversations scored")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run-dir", default="logs/learn_reliance")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run_dir = Path(args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = compose_mllm(["data.tasks=[diagnosis]", "logger=none", *args.overrides], run_dir)
    torch.manual_seed(args.seed)
    module = hydra.utils.instantiate(cfg.model)
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.setup("fit")
    dataset = datamodule.datasets["train"]
    if len(dataset) < args.train + args.held:
        raise SystemExit(f"{len(dataset)} diagnosis conversations; need --train + --held = {args.train + args.held}")
    train_index = list(range(args.train))
    held_index = list(range(args.train, args.train + args.held))
    collate = InstructCollator(module.tokenizer.pad_token_id)
    optimizer = module.optimizer_factory(params=module.parameter_groups())
    rng = random.Random(args.seed)

    def reliance() -> tuple[float, float]:
        module.model.eval()
        own = rolled = 0.0
        with torch.no_grad():
            for start in range(0, len(held_index), 16):
                batch = collate([dataset[i] for i in held_index[start : start + 16]])
                swapped = dict(batch)
                for modality in ("oct", "cfp"):
                    if batch.get(f"{modality}_pixels") is not None:
                        swapped[f"{modality}_pixels"] = batch[f"{modality}_pixels"].roll(1, 0)
                own += module.model(batch)["loss"].item()
                rolled += module.model(swapped)["loss"].item()
        module.model.train()
        batches = -(-len(held_index) // 16)
        return own / batches, (rolled - own) / batches

    module.model.train()
    started = time.perf_counter()
    print("step  train loss  held-out loss  image-reliance gap  seconds")
    for step in range(args.steps + 1):
        batch = collate([dataset[i] for i in rng.sample(train_index, cfg.data.batch_size)])
        optimizer.zero_grad()
        loss = module.model(batch)["loss"]
        loss.backward()
        optimizer.step()
        if step % args.every == 0:
            held, gap = reliance()
            print(f"{step:4d}  {loss.item():10.3f}  {held:13.4f}  {gap:+18.4f}  {time.perf_counter() - started:7.0f}")


if __name__ == "__main__":
    main()
