"""`grok-train-mllm`: instruction-tune the GROK MLLM (conf/mllm.yaml); export the adapter (or LM) + projectors."""

from __future__ import annotations

import logging
import time

from omegaconf import DictConfig, open_dict

from grok.utils.config import hydra_entry

# grok.utils.train imports Lightning before Hydra sets up logging (else it logs each line twice)
from grok.utils.train import checkpoint_state_dict, train

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> float | None:
    """Train with the shared Lightning runner, export to `export.dir`, return the monitored metric."""
    from grok.grounding.config import pin_knowledge_base
    from grok.mllm.export import export_mllm

    started = time.perf_counter()
    with open_dict(cfg):
        pin_knowledge_base(cfg.get("grounding"), cfg.paths.instructions_dir)
    if cfg.get("num_threads"):
        import torch

        torch.set_num_threads(int(cfg.num_threads))
    metrics, objects = train(cfg)
    trainer, module = objects["trainer"], objects["model"]
    if cfg.export.enabled and cfg.get("train", True) and trainer.is_global_zero:
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if best:
            module.load_state_dict(checkpoint_state_dict(best), strict=False)
            log.info("exporting the best checkpoint %s", best)
        export_mllm(module, cfg.export.dir, cfg, merge=cfg.export.merge)
    log.info("grok-train-mllm finished in %.1f s; metrics: %s", time.perf_counter() - started, metrics)
    value = metrics.get(cfg.get("monitor"))
    return float(value) if value is not None else None


@hydra_entry("mllm")
def main(cfg: DictConfig) -> float | None:
    """Console entry point."""
    return run(cfg)
