"""Stage two end to end through the real composed configs: fast_dev_run, training + export, resume, experiments."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from grok.align.datamodule import AlignDataModule
from grok.cli.train_align import run_align
from grok.models.encoders import load_exported_encoder
from grok.utils.config import config_dir
from grok.utils.train import train

FAST = ["trainer.max_epochs=1", "+trainer.limit_train_batches=2", "data.batch_size=16", "test=false"]


def _overrides(syntheye_dir: Path, *extra: str) -> list[str]:
    return [f"paths.syntheye_dir={syntheye_dir}", *FAST, *extra]


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (config_dir() / "experiment").glob("align_*.yaml")))
def test_every_align_experiment_composes(make_config: Callable, experiment: str) -> None:
    cfg = make_config("align", [f"experiment={experiment}"])
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    assert cfg.model.loss._target_ == "grok.align.loss.ContrastiveLoss"
    if experiment == "align_paper":
        assert (cfg.loss.kind, cfg.loss.temperature, cfg.data.batch_size) == ("ntxent", 0.5, 32)
        assert cfg.monitor == "val/pair_cosine" and cfg.encoder.architecture.depth == 24
        assert cfg.model.optimizer.lr == pytest.approx(1e-4) and cfg.model.finetune.mode == "full"


def test_subject_level_split_and_training_only_statistics(make_config: Callable, syntheye_dir: Path) -> None:
    cfg = make_config("align", _overrides(syntheye_dir))
    datamodule: AlignDataModule = instantiate(cfg.data)
    datamodule.setup("fit")
    subjects = {name: set(d.table["subject_id"]) for name, d in datamodule.datasets.items() if name != "probe"}
    assert not (subjects["train"] & subjects["val"]) and not (subjects["train"] & subjects["test"])
    assert datamodule.datasets["train"].numeric.nanmean(dim=0).abs().max() < 1e-4
    batch = next(iter(datamodule.train_dataloader()))
    clean = datamodule.datasets["train"].numeric[: len(batch["numeric"])]
    assert batch["image"].shape[1:] == (3, 64, 64) and batch["labels"].sum(dim=1).min() >= 1
    assert batch["targets"].shape[1] == len(cfg.data.probe_targets) and clean.shape == batch["numeric"].shape


def test_a_bad_table_stops_the_run_before_training(make_config: Callable, syntheye_dir: Path, tmp_path: Path) -> None:
    import pandas as pd

    from grok.schema.validate import TableValidationError

    table = pd.read_parquet(syntheye_dir / "biomarkers.parquet")
    table.loc[3, "rnfl_avg_um"] = 2000.0
    bad = tmp_path / "bad.csv"
    table.to_csv(bad, index=False)
    cfg = make_config("align", _overrides(syntheye_dir, f"data.table_path={bad}", f"data.image_root={syntheye_dir}"))
    with pytest.raises(TableValidationError, match=r"row 5, column 'rnfl_avg_um': \[out_of_range\] value 2000"):
        run_align(cfg)
    assert not list(tmp_path.rglob("*.ckpt")) and not Path(cfg.export.dir).exists()


def test_fast_dev_run_through_the_composed_config(make_config: Callable, syntheye_dir: Path) -> None:
    cfg = make_config(
        "align",
        _overrides(
            syntheye_dir, "+trainer.fast_dev_run=true", "callbacks=none", "logger=none", "loss=ntxent", "tabular=paper"
        ),
    )
    metrics, objects = train(cfg)
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    assert 0.0 <= metrics["val/recall@1"] <= 1.0 and "val/probe_r2_unaligned" in metrics
    assert objects["model"].loss.kind == "ntxent"


def test_train_export_and_resume_from_last_checkpoint(
    make_config: Callable, syntheye_dir: Path, tmp_path: Path
) -> None:
    cfg = make_config("align", _overrides(syntheye_dir), root=tmp_path / "first")
    metrics = run_align(cfg)
    export_dir = Path(cfg.export.dir)
    report = json.loads((export_dir / "metrics.json").read_text())
    assert {"recall@1", "probe_dx_auroc", "probe_dx_auroc_unaligned", "probe_r2_gain"} <= set(report["val"])
    assert (Path(cfg.paths.output_dir) / "plots" / "val_similarity.png").is_file()
    assert metrics["val/recall@1"] == pytest.approx(report["val"]["recall@1"])

    encoder = load_exported_encoder(export_dir / "oct_encoder.safetensors").eval()
    checkpoint = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    trained = {k.removeprefix("image_encoder."): v for k, v in state["state_dict"].items() if k.startswith("image_")}
    trained = {k: v for k, v in trained.items() if not k.startswith("projection")}
    torch.testing.assert_close(encoder.state_dict(), {k: trained[k] for k in encoder.state_dict()})
    assert encoder.transform_config == {"family": "tiny", "image_size": 64}

    resumed_cfg = make_config(
        "align",
        _overrides(
            syntheye_dir, "trainer.max_epochs=2", f"ckpt_path={checkpoint}", "export.enabled=false", "logger=csv"
        ),
        root=tmp_path / "second",
    )
    _, objects = train(resumed_cfg)
    assert objects["trainer"].current_epoch == 2 and objects["trainer"].global_step == 2 * state["global_step"]
    assert objects["model"].unaligned_probe == state["unaligned_probe"]  # restored, not recomputed on trained weights
