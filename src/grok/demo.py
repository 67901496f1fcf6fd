"""`make demo`: the whole GROK pipeline on the embedded SynthEye default, tiny models, CPU.

Runs each stage's console entry point with its default config, in order, and prints how long each took. Any extra
arguments are passed to every stage as Hydra overrides (e.g. `paths.root_dir=/tmp/grok-demo`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

# (console script, its own overrides, what it does); the user's overrides follow a stage's own
STAGES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("grok-synth", (), "generate the SynthEye dataset (biomarker table + OCT and CFP images)"),
    ("grok-validate", (), "check the table against the schema"),
    ("grok-generate", (), "stage one: knowledge-guided instruction data"),
    ("grok-train-align", (), "stage two: CLIP-style OCT-biomarker alignment"),
    ("grok-train-mllm", (), "stage three: grounded MLLM instruction tuning (full fine-tuning of the tiny base)"),
    ("grok-infer", (), "reports for the held-out test split"),
    (
        "grok-infer",
        ("mode=rules", "model_name=grok-rules"),
        "the pipeline baseline: read-out estimates through the knowledge engine, no language model",
    ),
    ("grok-infer", ("images_from=other_eye",), "input reliance: the test reports again, with another eye's images"),
    (
        "grok-infer",
        ("mode=rules", "model_name=grok-rules", "images_from=other_eye"),
        "input reliance of the pipeline baseline",
    ),
    ("grok-eval", (), "the GOU benchmark"),
)


def _executable(name: str) -> str:
    local = Path(sys.executable).with_name(name)
    found = str(local) if local.exists() else shutil.which(name)
    if found is None:
        raise SystemExit(f"console script '{name}' not found; run `make install` first")
    return found


def main(argv: list[str] | None = None) -> int:
    """Run every stage; stop at the first failure with its exit status."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip", nargs="*", default=[], help="stages to skip, e.g. --skip grok-synth")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides passed to every stage")
    args = parser.parse_args(argv)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.setdefault("WANDB_MODE", "offline")
    timings: list[tuple[str, float]] = []
    for name, own, purpose in STAGES:
        if name in args.skip:
            continue
        step = " ".join((name, *own))
        print(f"\n=== {step}: {purpose}", flush=True)
        start = time.perf_counter()
        status = subprocess.call([_executable(name), *own, *args.overrides], env=env)
        timings.append((step, time.perf_counter() - start))
        if status != 0:
            print(f"\n{step} failed with exit status {status}", file=sys.stderr)
            return status
    width = max(len(step) for step, _ in timings) + 2
    print("\n=== demo finished")
    for step, seconds in timings:
        print(f"{step:<{width}} {seconds:8.1f} s")
    print(f"{'total':<{width}} {sum(s for _, s in timings):8.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
