"""`grok-infer`: diagnostic reports from the exported GROK MLLM, for a whole split or a single case.

A single case is either images plus a prompt of your own, or one row of a biomarker table (`row.table`,
`row.eye_id`): the row becomes the prompt stage one writes for it (demographics and systemic measures; the image
quantities are left for the model to read), with the row's OCT and CFP images.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from grok.utils.config import hydra_entry

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> Path | str:
    """Write the split's predictions JSONL (returns its path), or print and return a single-case report."""
    import torch

    from grok.mllm.datamodule import InstructionDataset, read_instructions
    from grok.mllm.export import load_exported_mllm
    from grok.mllm.generate import generate_reports, write_predictions

    torch.manual_seed(cfg.seed)
    if cfg.get("num_threads"):
        torch.set_num_threads(int(cfg.num_threads))
    started = time.perf_counter()
    module, train_cfg = load_exported_mllm(cfg.model_dir)
    overrides = {key: value for key, value in OmegaConf.to_container(cfg.generation).items() if value is not None}
    settings = {**OmegaConf.to_container(train_cfg.get("generation") or {}), **overrides}
    data = train_cfg.data
    from_row = bool(cfg.row.get("table"))
    single = from_row or any(cfg.images.get(m) for m in ("oct", "cfp")) or cfg.prompt
    if from_row:
        record, image_root = row_record(cfg.row.table, cfg.row.eye_id, cfg.row.knowledge_base)
        records = [record]
    elif single:
        records = [_single_record(cfg)]
        image_root = Path(".")
    else:
        records = read_instructions(Path(cfg.instructions_dir) / f"{cfg.split}.jsonl")
        records = [r for r in records if not cfg.tasks or r.get("task") in cfg.tasks]
        records = records[: cfg.max_records] if cfg.max_records else records
        image_root = _image_root(cfg, data)
    from grok.mllm.datamodule import InstructDataModule

    transforms = InstructDataModule(
        instructions_dir=cfg.instructions_dir, tokenizer=module.tokenizer, image_transforms=data.image_transforms
    ).transforms(train=False)
    dataset = InstructionDataset(
        records,
        module.tokenizer,
        image_root,
        transforms,
        system_prompt=train_cfg.get("system_prompt"),
        max_length=data.max_length,
        generation=True,
    )
    rows = list(
        generate_reports(module.model, module.tokenizer, dataset, cfg.batch_size, settings, cfg.device, cfg.progress)
    )
    log.info("generated %d report(s) in %.1f s", len(rows), time.perf_counter() - started)
    if single:
        print(rows[0]["prediction"])
        return rows[0]["prediction"]
    path = write_predictions(rows, cfg.output, cfg.model_name)
    log.info("predictions written to %s", path)
    return path


def _image_root(cfg: DictConfig, data: DictConfig) -> Path:
    if data.get("image_root"):
        return Path(data.image_root)
    manifest = Path(cfg.instructions_dir) / "manifest.json"
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest} not found; run `make data` first or set instructions_dir")
    return Path(json.loads(manifest.read_text(encoding="utf-8"))["image_root"])


def row_record(table_path: str | Path, eye_id: str | None, knowledge_base: str | None = None) -> tuple[dict, Path]:
    """The `report` prompt record stage one writes for one table row (answer removed), and its image root."""
    from grok.knowledge import load_knowledge_base
    from grok.knowledge.generate import GenerationPlan, RecordFactory, eye_ids, read_table
    from grok.knowledge.instructions import InstructionBuilder
    from grok.knowledge.writer import ReportWriter

    if not eye_id:
        raise ValueError(f"row.table={table_path} needs row.eye_id ('<subject_id>_<eye>', e.g. S000123_R)")
    table = read_table(table_path)
    ids = eye_ids(table)
    if eye_id not in ids:
        raise ValueError(f"{table_path}: no row with eye id {eye_id!r} (row.eye_id); ids look like {ids[:3]}")
    kb = load_knowledge_base(knowledge_base)
    plan = GenerationPlan(fractions={"test": 1.0}, mix={"test": {"report": 1}})
    factory = RecordFactory(kb, InstructionBuilder(ReportWriter(kb)), plan)
    _, lines = factory.records(table.iloc[ids.index(eye_id)].to_dict(), eye_id, "test")
    record = json.loads(lines[0])
    record["conversations"] = record["conversations"][:1]
    return record, Path(table_path).resolve().parent


def _single_record(cfg: DictConfig) -> dict:
    images = {m: str(Path(p).resolve()) for m, p in cfg.images.items() if p}
    prefix = "".join(f"<{m}>\n" for m in ("oct", "cfp") if m in images)
    prompt = cfg.prompt or "Write the diagnostic report for this eye."
    return {"id": "case", "images": images, "conversations": [{"from": "human", "value": prefix + prompt}]}


@hydra_entry("infer")
def main(cfg: DictConfig) -> Path | str:
    """Console entry point."""
    return run(cfg)
