"""Samples/s of the Lightning training step vs a plain PyTorch loop, same model, loss, optimiser and batches.

    .venv/bin/python experiments/benchmarks/bench_align.py [--steps 40] [--warmup 5] [--repeats 3] [--threads 1]
        [--syntheye-dir data/syntheye] [overrides ...]

Batches are materialised once from the AlignDataModule (tiny encoder, SynthEye) and replayed by both loops, so the
figure isolates the training step (forward, loss, backward, optimiser, logging) from image decoding. The two loops
alternate `--repeats` times to spread machine-load drift; medians are printed with the ratio Lightning / plain.
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

import hydra
import lightning as L
import torch
from hydra import compose, initialize_config_dir
from torch.utils.data import DataLoader

from grok.utils.config import config_dir


class _Timer(L.Callback):
    """Wall time from the start of training step `warmup` to the end of the last step."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end = warmup, 0.0, 0.0

    def on_train_batch_start(self, trainer, module, batch, batch_index) -> None:
        if trainer.global_step == self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_index) -> None:
        self.end = time.perf_counter()


def _build(cfg):
    torch.manual_seed(0)
    return hydra.utils.instantiate(cfg.model)


def plain_loop(cfg, batches: list, warmup: int) -> float:
    """Samples/s of a hand-written loop doing what AlignModule.training_step does."""
    module = _build(cfg)
    module.train()
    optimizer = module.configure_optimizers()
    start = 0.0
    for step, batch in enumerate(batches):
        if step == warmup:
            start = time.perf_counter()
        _, image_projection, table_projection = module.embed(batch)
        loss = module.loss(image_projection, table_projection)
        module._projection_std(image_projection), module._projection_std(table_projection)  # same diagnostics
        module._warn_on_collapse(image_projection, table_projection)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        module.loss.clamp_logit_scale_()
        float(loss)  # what a progress bar / logger reads each step
    return (len(batches) - warmup) * len(batches[0]["image"]) / (time.perf_counter() - start)


def lightning_loop(cfg, batches: list, warmup: int) -> float:
    """Samples/s of Trainer.fit on the same module, batches and optimiser (no validation, checkpointing or bars)."""
    module = _build(cfg)
    timer = _Timer(warmup)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=len(batches),
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None, shuffle=False))
    return (len(batches) - warmup) * len(batches[0]["image"]) / (timer.end - timer.start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--syntheye-dir", default="data/syntheye")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of conf/align.yaml")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(tempfile.mkdtemp(prefix="bench_align_"))
    overrides = [
        f"paths.root_dir={root}",
        f"paths.output_dir={root}",
        f"paths.syntheye_dir={Path(args.syntheye_dir).resolve()}",
        "model.scheduler=null",
        "model.probe.enabled=false",
        *args.overrides,
    ]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("align", overrides=overrides)
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    batches: list = []
    while len(batches) < args.steps:
        batches.extend(loader)
    batches = batches[: args.steps]
    plain, lightning = [], []
    for _ in range(args.repeats):
        plain.append(plain_loop(cfg, batches, args.warmup))
        lightning.append(lightning_loop(cfg, batches, args.warmup))
    plain_median, lightning_median = statistics.median(plain), statistics.median(lightning)
    print(
        f"batch {len(batches[0]['image'])}, {args.steps - args.warmup} timed steps x {args.repeats} repeats, "
        f"{args.threads} thread(s), load {os.getloadavg()[0]:.2f}"
    )
    print(f"plain loop: {plain_median:8.1f} samples/s  (runs: {', '.join(f'{v:.1f}' for v in plain)})")
    print(f"lightning : {lightning_median:8.1f} samples/s  (runs: {', '.join(f'{v:.1f}' for v in lightning)})")
    print(f"ratio lightning/plain: {lightning_median / plain_median:.3f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
