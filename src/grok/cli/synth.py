"""grok-synth: write the SynthEye embedded default dataset and print a summary."""

from __future__ import annotations

import time

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from grok.data.synth import label_counts, write_syntheye
from grok.utils.config import hydra_entry


@hydra_entry("synth")
def main(cfg: DictConfig) -> None:
    """Generate `cfg.n_subjects` subjects into `cfg.output_dir` and print rows, label counts, wall time and, with
    OCT volumes, what they cost per eye."""
    started = time.perf_counter()
    options = OmegaConf.to_container(cfg.options, resolve=True)
    timings: dict[str, float] = {}
    table = write_syntheye(
        cfg.output_dir,
        n_subjects=cfg.n_subjects,
        seed=cfg.seed,
        overwrite=cfg.overwrite,
        num_workers=cfg.num_workers,
        progress=cfg.progress,
        timings=timings,
        **options,
    )
    elapsed = time.perf_counter() - started
    frame = pd.read_parquet(table, columns=["subject_id", "labels"])
    counts = ", ".join(f"{name} {count}" for name, count in label_counts(frame).items())
    print(f"SynthEye: {len(frame)} eyes of {frame['subject_id'].nunique()} subjects -> {table}")
    print(f"  subjects per label: {counts}")
    print(f"  wall time {elapsed:.1f} s ({cfg.num_workers} worker(s))")
    eyes = max(timings.get("eye_count", 0.0), 1.0)
    if timings.get("volumes"):
        print(
            f"  OCT volumes: {timings['volumes'] / eyes:.3f} s per eye to render and write (of "
            f"{timings['eyes'] / eyes:.3f} s per eye in all, summed over workers)"
        )
