"""`make demo`: the whole GROK pipeline on the embedded SynthEye default, tiny models, CPU.

Runs each stage's console entry point with its default config, in order, and prints how long each took. Any extra
arguments are Hydra overrides, each passed to the stages whose config has that key or group
(`paths.root_dir=/tmp/grok-demo` to every stage, `llm=smollm2_135m` to grok-train-mllm only, `hardware=gpu` to the
stages with a `hardware` group); `+key=value` goes to every stage, and an override no stage's config has is refused.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

# the Hydra config (conf/<name>.yaml) each console script composes
CONFIG_OF: dict[str, str] = {
    "grok-synth": "synth",
    "grok-validate": "validate",
    "grok-generate": "generate",
    "grok-train-align": "align",
    "grok-train-mllm": "mllm",
    "grok-infer": "infer",
    "grok-eval": "eval",
}
_ABSENT = object()

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


def route_overrides(overrides: list[str], stages: list[str]) -> dict[str, list[str]]:
    """{console script: the user's overrides its config takes}: a group override (`llm=...`, `encoder@cfp_encoder=...`)
    goes where the group is selected, a value (`trainer.max_epochs=1`) where the key exists, `+key`/`++key` to every
    stage. Raises SystemExit naming an override that no stage takes (a typo would otherwise be silently dropped)."""
    if not overrides:
        return {stage: [] for stage in stages}
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    from grok.utils.config import config_dir

    parsed = OverridesParser.create().parse_overrides(overrides)
    composed = {}
    for name in sorted({CONFIG_OF[stage] for stage in stages}):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            composed[name] = compose(name, return_hydra_config=True)
    GlobalHydra.instance().clear()

    def takes(cfg, override) -> bool:
        if override.is_add() or override.is_force_add():
            return True
        key = override.key_or_group
        choices = cfg.hydra.runtime.choices
        group = f"{key}@{override.package}" if override.package else key
        if group in choices or override.package is not None:
            return group in choices
        node = OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=False, throw_on_resolution_failure=False)
        return node is not _ABSENT

    routed: dict[str, list[str]] = {stage: [] for stage in stages}
    for line, override in zip(overrides, parsed, strict=True):
        takers = [stage for stage in stages if takes(composed[CONFIG_OF[stage]], override)]
        if not takers:
            raise SystemExit(f"override {line!r}: no stage's config ({', '.join(sorted(composed))}) has this key")
        for stage in takers:
            routed[stage].append(line)
    return routed


def main(argv: list[str] | None = None) -> int:
    """Run every stage; stop at the first failure with its exit status."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip", nargs="*", default=[], help="stages to skip, e.g. --skip grok-synth")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides passed to every stage")
    args = parser.parse_args(argv)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.setdefault("WANDB_MODE", "offline")
    timings: list[tuple[str, float]] = []
    stages = [(name, own, purpose) for name, own, purpose in STAGES if name not in args.skip]
    # every stage's config is consulted (an override for a skipped stage is fine, one for no stage is a typo)
    routed = route_overrides(list(args.overrides), sorted({name for name, _, _ in STAGES}))
    for name, own, purpose in stages:
        step = " ".join((name, *own))
        print(f"\n=== {step}: {purpose}", flush=True)
        start = time.perf_counter()
        status = subprocess.call([_executable(name), *own, *routed[name]], env=env)
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
