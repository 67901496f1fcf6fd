"""The prepared GPU check (experiments/gpu/): its FLOP count and peak table, and its dry run at tiny size on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import hydra
import pytest
import torch
from torch import nn

from helpers import compose_config

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments" / "gpu"))
from paper_step import language_model_flops, peak_tflops  # noqa: E402


def test_the_flop_count_matches_the_qwen2_7b_modules_it_counts(tmp_path: Path):
    cfg = compose_config("gpucheck", tmp_path)
    config = hydra.utils.instantiate(cfg.steps.language_model)
    from transformers import Qwen2ForCausalLM

    with torch.device("meta"):
        model = Qwen2ForCausalLM(config)
    matrices = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    figures = language_model_flops(config, tokens=2048, seq_len=2048)
    assert figures["n_base"] == matrices and 7.0e9 < matrices < 7.1e9  # every linear + the output head, no embedding
    assert figures["attention_forward"] == 4 * 28 * 2048**2 * 3584


@pytest.mark.parametrize(
    ("name", "tflops"),
    [("NVIDIA H100 80GB HBM3", 989), ("NVIDIA H100 PCIe", 756), ("NVIDIA H200", 989), ("NVIDIA A100-SXM4-80GB", 312),
     ("NVIDIA L40S", 362), ("NVIDIA L4", 121), ("Tesla V100-SXM2-32GB", None)],
)  # fmt: skip
def test_peak_table_picks_the_most_specific_name(name: str, tflops: float | None, tmp_path: Path):
    table = list(compose_config("gpucheck", tmp_path).peak_bf16_tflops)
    assert peak_tflops(name, table) == tflops


@pytest.mark.distributed  # its DDP part spawns two gloo processes
def test_dry_run_writes_every_figure(tmp_path: Path):
    output = tmp_path / "gpu_check.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GROK_PYTHON": sys.executable}
    command = [
        str(REPO / "experiments" / "gpu" / "check.sh"), "--dry", f"output={output}",
        f"hydra.run.dir={tmp_path / 'run'}", f"demo.root_dir={tmp_path / 'demo'}",
        # the test's budget: the data stages of the demo only (make demo runs them all), DDP on their data
        "demo.skip=[grok-train-align,grok-train-mllm,grok-infer,grok-eval]",
    ]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(output.read_text())
    assert figures["dry"] is True and figures["device"]["name"] == "cpu"
    assert set(figures) >= {"device", "steps", "demo", "ddp", "targets", "flop_formula", "total_wall_s"}
    lora = figures["steps"]["lora"]
    assert lora["status"] == "ok" and lora["seq_len"] == 64 and lora["tokens_per_s"] > 0
    assert lora["model_flops_per_step"] > 0 and lora["mfu"] is None and lora["peak_memory_gib"] is None  # CPU
    assert lora["losses"][-1] < lora["losses"][0]
    assert figures["steps"]["qlora"]["status"] in ("ok", "skipped")
    assert figures["demo"]["status"] == "ok", figures["demo"]
    assert (tmp_path / "demo" / "data" / "instructions" / "train.jsonl").is_file()
    assert figures["ddp"]["status"] == "ok" and figures["ddp"]["devices"] == 2, figures["ddp"]
    assert all(target["met"] is None for target in figures["targets"].values())  # nothing measured on a CPU
    assert "lora_mfu" in result.stdout and "tokens/s" in result.stdout
