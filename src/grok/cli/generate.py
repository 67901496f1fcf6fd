"""grok-generate: stage one, knowledge-guided instruction data from a biomarker table (conf/generate.yaml)."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from grok.knowledge.generate import GenerationPlan, RecordFactory, RunSummary, format_summary, generate
from grok.knowledge.instructions import InstructionBuilder
from grok.knowledge.parser import load_knowledge_base
from grok.knowledge.phrasing import load_phrasebook
from grok.knowledge.writer import ReportWriter
from grok.utils.config import hydra_entry

log = logging.getLogger(__name__)


def run_generate(cfg: DictConfig) -> RunSummary:
    """Build the KB, writer and plan from the config and write the instruction files."""
    kb = load_knowledge_base(cfg.knowledge_base.version, path=cfg.knowledge_base.path)
    phrasebook = load_phrasebook(cfg.templates)
    builder = InstructionBuilder(ReportWriter(kb, phrasebook))
    plan = GenerationPlan(
        seed=int(cfg.seed),
        split_seed=int(cfg.split.seed),
        fractions=dict(cfg.split.fractions),
        mix={split: dict(tasks) for split, tasks in cfg.mix.items()},
        style_weights={split: dict(weights) for split, weights in cfg.style_weights.items()},
        checkpoint_every=int(cfg.checkpoint_every),
        image_columns=dict(cfg.image_columns),
    )
    factory = RecordFactory(kb, builder, plan)
    rewrite = None
    llm_cfg = OmegaConf.to_container(cfg.llm_writer, resolve=True)
    if llm_cfg.get("mode", "none") != "none":
        from grok.knowledge.llm_writer import LLMWriter

        rewrite = LLMWriter(llm_cfg, builder, image_root=Path(cfg.input_table).resolve().parent)
    run_config = {
        "seed": plan.seed,
        "split": {"seed": plan.split_seed, "fractions": dict(plan.fractions)},
        "mix": {k: dict(v) for k, v in plan.mix.items()},
        "style_weights": {k: dict(v) for k, v in plan.style_weights.items()},
        "knowledge_base": {"name": kb.name, "version": kb.version, "file": Path(kb.path).name},
        "image_columns": dict(plan.image_columns),
        "limit": cfg.limit,
        "llm_writer": llm_cfg,
    }
    fingerprint_files = [Path(kb.path), Path(phrasebook.source)]
    summary = generate(
        cfg.input_table,
        cfg.output_dir,
        factory,
        run_config,
        fingerprint_files=fingerprint_files,
        progress=bool(cfg.progress),
        limit=cfg.limit,
        rewrite=rewrite,
        rewrite_stats=(lambda: dict(rewrite.stats)) if rewrite is not None else None,
        validate_table=bool(cfg.validate_table),
        check_images=bool(cfg.check_images),
    )
    log.info("instructions written to %s\n%s", cfg.output_dir, format_summary(summary))
    return summary


@hydra_entry("generate")
def main(cfg: DictConfig) -> None:
    """Console entry point `grok-generate`."""
    run_generate(cfg)


if __name__ == "__main__":
    main()
