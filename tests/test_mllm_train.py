"""grok-train-mllm end to end on a tiny fixture: fast_dev_run, resume, DDP on two CPU processes, export -> infer."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch

from grok.cli.infer import run as infer
from grok.cli.train_mllm import run as train_mllm
from grok.models.encoders.checkpoints import CheckpointMismatchError
from grok.utils.errors import is_bad_input, one_line
from grok.utils.train import train
from mllm_helpers import tiny_overrides, write_instruction_fixture


@pytest.fixture(scope="module")
def instructions(tmp_path_factory):
    return write_instruction_fixture(tmp_path_factory.mktemp("mllm_train_data"))


def test_fast_dev_run(make_config, instructions) -> None:
    cfg = make_config(
        "mllm", tiny_overrides(instructions, ["+trainer.fast_dev_run=true", "callbacks=none", "logger=none"])
    )
    metrics, objects = train(cfg)
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    assert objects["trainer"].global_step == 1


@pytest.mark.parametrize(
    ("adaptation", "trainable", "probe"),
    [
        ("lora", ("lora_", "modules_to_save", "model.fusion.", "model.grounding.", ".vocabulary."), "lora_B"),
        ("full", ("model.language_model.", "model.fusion.", "model.grounding.", ".vocabulary."), "q_proj.weight"),
    ],
)
def test_checkpoint_holds_only_trainable_weights_and_resumes(
    make_config, instructions, tmp_path, adaptation, trainable, probe
) -> None:
    options = [f"adaptation={adaptation}", "trainer.max_epochs=1", "export.enabled=false"]
    train(make_config("mllm", tiny_overrides(instructions, options)))
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, map_location="cpu", weights_only=False)
    keys = list(checkpoint["state_dict"])
    assert keys and all(any(part in k for part in trainable) for k in keys)
    assert not any(k.startswith("model.encoders.") or "original_module" in k for k in keys)
    resumed = make_config(
        "mllm", tiny_overrides(instructions, [f"adaptation={adaptation}", "trainer.max_epochs=2", f"ckpt_path={last}"])
    )
    _, objects = train(resumed)
    assert objects["trainer"].current_epoch == 2
    steps_per_epoch = checkpoint["global_step"]
    assert objects["trainer"].global_step == 2 * steps_per_epoch
    now = next(v for k, v in objects["model"].trainable_state_dict().items() if probe in k)
    saved = next(v for k, v in checkpoint["state_dict"].items() if probe in k)
    assert not torch.equal(now, saved)  # training continued from the saved weights
    other = "full" if adaptation == "lora" else "lora"
    mismatched = make_config(
        "mllm", tiny_overrides(instructions, [f"adaptation={other}", "trainer.max_epochs=2", f"ckpt_path={last}"])
    )
    with pytest.raises(CheckpointMismatchError, match=r"last.ckpt: the checkpoint lacks \d+ trainable weight"):
        train(mismatched)


@pytest.mark.distributed
def test_ddp_on_two_cpu_processes(make_config, instructions) -> None:
    cfg = make_config(
        "mllm",
        tiny_overrides(
            instructions,
            # spawn: the default popen launcher would re-run the pytest command line in the child process
            [
                "hardware=ddp_cpu",
                "+hardware.strategy.start_method=spawn",
                "+trainer.max_steps=2",
                "model.warmup_ratio=0",
                "callbacks=none",
                "logger=none",
            ],
        ),
    )
    metrics, objects = train(cfg)
    assert objects["trainer"].world_size == 2
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    # rank 0's trained weights come back to this process: the adapter moved away from its zero init
    lora_b = [p for n, p in objects["model"].model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)


def test_train_export_then_infer_writes_predictions(make_config, instructions, tmp_path, syntheye_dir) -> None:
    # first the tiny default's full fine-tuning, then LoRA into the same export folder: no stale layout stays behind
    train_mllm(make_config("mllm", tiny_overrides(instructions, ["adaptation=full", "trainer.max_epochs=1"])))
    export = tmp_path / "artifacts" / "mllm"
    assert (export / "language_model" / "config.json").is_file() and not (export / "adapter").exists()
    cfg = make_config("mllm", tiny_overrides(instructions, ["trainer.max_epochs=1"]))
    train_mllm(cfg)
    assert (export / "adapter" / "adapter_config.json").is_file() and (export / "fusion.safetensors").is_file()
    assert not (export / "language_model").exists()
    infer_cfg = make_config(
        "infer", [f"instructions_dir={instructions}", "generation.max_new_tokens=4", "progress=false"]
    )
    path = infer(infer_cfg)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert path.name == "grok_test.jsonl"
    assert len(rows) == 8 and {row["model"] for row in rows} == {"grok"}
    assert {row["id"] for row in rows} == {f"Ste{i:03d}_R" for i in range(8)}

    # single case from one biomarker-table row: stage one's prompt for that eye, with its images
    table = syntheye_dir / "biomarkers.parquet"
    row_cfg = make_config("infer", [f"row.table={table}", "row.eye_id=S000003_L", "generation.max_new_tokens=4"])
    assert isinstance(infer(row_cfg), str)
    with pytest.raises(ValueError, match="no row with eye id 'S999999_L'"):
        infer(make_config("infer", [f"row.table={table}", "row.eye_id=S999999_L"]))
    with pytest.raises(ValueError, match=r"needs row\.eye_id"):
        infer(make_config("infer", [f"row.table={table}"]))


def test_row_record_is_the_stage_one_prompt_of_that_row(syntheye_dir) -> None:
    import pandas as pd

    table = pd.read_parquet(syntheye_dir / "biomarkers.parquet")
    row = table[(table["subject_id"] == "S000003") & (table["eye"] == "L")].iloc[0]
    from grok.knowledge import load_knowledge_base
    from grok.knowledge.generate import report_record_for_row

    record, image_root = report_record_for_row(syntheye_dir / "biomarkers.parquet", "S000003_L", load_knowledge_base())
    human = record["conversations"][0]
    assert human["from"] == "human" and human["value"].startswith("<oct>\n<cfp>\n")
    assert f"{row['sbp_mmhg']:.0f}/{row['dbp_mmhg']:.0f} mmHg" in human["value"]
    assert all((image_root / path).is_file() for path in record["images"].values())


def test_an_empty_training_split_stops_the_run_naming_the_file(make_config, instructions, tmp_path) -> None:
    empty = tmp_path / "empty"
    shutil.copytree(instructions, empty)
    (empty / "train.jsonl").write_text("", encoding="utf-8")
    with pytest.raises(Exception) as error:  # raised while the model reads its vocabulary corpus (Hydra wraps it)
        train(make_config("mllm", tiny_overrides(empty, ["trainer.max_epochs=1"])))
    assert is_bad_input(error.value)
    assert re.search(r"train\.jsonl: no (records|training conversations)", one_line(error.value)), one_line(error.value)
