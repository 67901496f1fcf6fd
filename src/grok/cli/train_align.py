"""grok-train-align: stage two, contrastive OCT/biomarker alignment; exports the aligned OCT encoder."""

from __future__ import annotations

import logging
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from grok.align.export import export_aligned_encoder
from grok.utils.config import hydra_entry
from grok.utils.train import checkpoint_state_dict, train

log = logging.getLogger(__name__)


def run_align(cfg: DictConfig) -> dict[str, Any]:
    """Fit (and test) per `cfg`, reload the best checkpoint, validate it and export the encoder; return metrics."""
    if cfg.get("num_threads"):
        torch.set_num_threads(int(cfg.num_threads))
    metrics, objects = train(cfg)
    module, trainer, datamodule = objects["model"], objects["trainer"], objects["datamodule"]
    callback = trainer.checkpoint_callback
    best = callback.best_model_path if callback is not None else ""
    if best:  # Lightning may restore best_model_path from a resumed checkpoint: read it with the safe loader
        module.load_state_dict(checkpoint_state_dict(best))
        log.info("best checkpoint (%s): %s", cfg.monitor, best)
    if cfg.export.enabled and not trainer.fast_dev_run:
        validated = trainer.validate(module, datamodule=datamodule, verbose=False)[0]
        path = export_aligned_encoder(
            module,
            cfg.export.dir,
            cfg.export.name,
            metrics={"val": validated, "test": metrics},
            metadata={
                "checkpoint": best,
                "monitor": cfg.monitor,
                "loss": cfg.loss.kind,
                "tabular_encoder": cfg.tabular.encoder._target_,
                "source_encoder": cfg.encoder.get("name"),
                "source_checkpoint": OmegaConf.select(cfg, "encoder.checkpoint", throw_on_missing=False),
            },
        )
        log.info("exported aligned OCT encoder to %s (metrics.json beside it)", path)
        metrics.update(validated)
    return metrics


@hydra_entry("align")
def main(cfg: DictConfig) -> float | None:
    """Console entry point; returns the model-selection metric (for Hydra sweepers)."""
    metrics = run_align(cfg)
    value = metrics.get(cfg.monitor)
    return float(value) if value is not None else None


if __name__ == "__main__":
    main()
