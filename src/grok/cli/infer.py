"""`grok-infer`: diagnostic reports from the exported GROK MLLM, for a whole split or a single case.

A single case is either images plus a prompt of your own, or one row of a biomarker table (`row.table`,
`row.eye_id`): the row becomes the prompt stage one writes for it (demographics and systemic measures; the image
quantities are left for the model to read, unless `grounding.input_columns=all` supplies the row's own values).
`mode=rules` writes the pipeline baseline instead (read-out estimates through the knowledge engine, no LM);
`images_from=other_eye` gives each eye another eye's images (the benchmark's input-reliance check).

A whole split is written to `<output>.partial`, line by line, and renamed into place when done. A rerun of the same
inputs (model export, records, settings: `fingerprint`) keeps a finished file (`overwrite=true` regenerates it) and
continues an interrupted one from its last whole batch (`resume=false` starts over): the batches are those of an
uninterrupted run, and batch n samples from a seed of (seed, n), so the file ends byte-identical.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from grok.utils.config import hydra_entry

log = logging.getLogger(__name__)
MODES = ("lm", "rules")
IMAGES_FROM = ("own", "other_eye")


def run(cfg: DictConfig) -> Path | str:
    """Write the split's predictions JSONL (returns its path), or print and return a single-case report."""
    import torch

    from grok.mllm.datamodule import InstructionDataset, conversation_grounding, image_transforms
    from grok.mllm.export import load_exported_mllm

    if cfg.mode not in MODES or cfg.images_from not in IMAGES_FROM:
        raise ValueError(f"mode={cfg.mode!r} / images_from={cfg.images_from!r}: expected {MODES} / {IMAGES_FROM}")
    torch.manual_seed(cfg.seed)
    if cfg.get("num_threads"):
        torch.set_num_threads(int(cfg.num_threads))
    started = time.perf_counter()
    module, train_cfg = load_exported_mllm(cfg.model_dir)
    data = train_cfg.data
    records, image_root = _records(cfg, module, data)
    if cfg.images_from == "other_eye":
        records = with_other_eyes_images(records, cfg.seed)
    if cfg.get("images_absent"):
        records = without_images(records, list(cfg.images_absent))
    grounding_cfg = train_cfg.model.get("grounding")
    source = cfg.grounding.source or (grounding_cfg or {}).get("source")
    dataset = InstructionDataset(
        records,
        module.tokenizer,
        image_root,
        image_transforms(data.image_transforms),
        system_prompt=train_cfg.get("system_prompt"),
        max_length=data.max_length,
        generation=True,
        grounding=conversation_grounding(grounding_cfg),
        input_columns=cfg.grounding.input_columns,
        oct_slices=data.get("oct_slices"),
    )
    if _single(cfg):
        rows = list(_reports(cfg, module, train_cfg, dataset, source))
        print(rows[0]["prediction"])
        return rows[0]["prediction"]
    path = _write_split(cfg, module, train_cfg, dataset, source, records)
    log.info("predictions written to %s (%.1f s)", path, time.perf_counter() - started)
    return path


def _write_split(cfg: DictConfig, module: Any, train_cfg: DictConfig, dataset: Any, source: Any, records: list) -> Path:
    """The split's predictions file: kept when up to date, else generated (resumed from a partial file of the same
    inputs) through `<output>.partial` and renamed into place."""
    from grok.mllm.generate import PredictionsOutput

    folder = cfg.other_eye_dir if cfg.images_from == "other_eye" else cfg.predictions_dir
    absent = "".join(f"_no_{modality}" for modality in cfg.get("images_absent") or ())  # never the full-input file
    output = PredictionsOutput(
        cfg.output or Path(folder) / f"{cfg.model_name}_{cfg.split}{absent}.jsonl", fingerprint(cfg, records)
    )
    if output.up_to_date() and not cfg.get("overwrite", False):
        log.info("%s is up to date (same model, records and settings); overwrite=true regenerates it", output.path)
        return output.path
    batches = _batches(cfg, dataset)
    done = 0
    if cfg.get("resume", True):
        done = output.resume(batches)
    else:
        output.start()
    if done:
        log.info("resuming %s after %d of %d batch(es)", output.partial, done, len(batches))
    rows = _reports(cfg, module, train_cfg, dataset, source, skip_batches=done)
    if cfg.get("images_absent"):  # the benchmark counts what a report states of an image it was written without
        rows = ({**row, "images_absent": sorted(cfg.images_absent)} for row in rows)
    output.append(rows, cfg.model_name, source=source if module.model.grounding else None)
    return output.finish()


def _batches(cfg: DictConfig, dataset: Any) -> list[list[str]]:
    """The record ids of each generation batch, in the order `_reports` writes them."""
    from grok.mllm.generate import generation_order

    order = generation_order(dataset.lengths) if cfg.mode == "lm" else list(range(len(dataset)))
    ids = [dataset.records[index].get("id") for index in order]
    return [ids[start : start + cfg.batch_size] for start in range(0, len(ids), cfg.batch_size)]


# Settings that do not change what is written (where and how verbosely, whether to reuse earlier work).
UNWRITTEN_KEYS = (
    *("hydra", "paths", "tags", "task_name", "progress", "num_threads"),
    *("resume", "overwrite", "output", "predictions_dir", "other_eye_dir"),
)


def fingerprint(cfg: DictConfig, records: list[dict]) -> str:
    """A hash of what determines a split's predictions: the settings, the prompt records and the model export's
    files (names, sizes, modification times)."""
    settings = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    settings = {key: value for key, value in settings.items() if key not in UNWRITTEN_KEYS}
    model_dir = Path(cfg.model_dir)
    files = [
        (str(path.relative_to(model_dir)), path.stat().st_size, path.stat().st_mtime_ns)
        for path in sorted(model_dir.rglob("*"))
        if path.is_file() and "feature_cache" not in path.relative_to(model_dir).parts
    ]
    digest = hashlib.sha256()
    for part in (settings, records, files):
        digest.update(json.dumps(part, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def _single(cfg: DictConfig) -> bool:
    return bool(cfg.row.get("table") or any(cfg.images.get(m) for m in ("oct", "cfp")) or _prompt(cfg))


def _records(cfg: DictConfig, module: Any, data: DictConfig) -> tuple[list[dict], Path]:
    """The prompt records and the folder their images are relative to."""
    from grok.grounding.spans import first_turns
    from grok.knowledge.generate import report_record_for_row
    from grok.knowledge.instructions import image_prefix
    from grok.knowledge.phrasing import load_phrasebook
    from grok.mllm.datamodule import image_root_of
    from grok.mllm.instructions import read_instructions

    if cfg.row.get("table"):
        if not cfg.row.get("eye_id"):
            raise ValueError(f"row.table={cfg.row.table} needs row.eye_id ('<subject_id>_<eye>', e.g. S000123_R)")
        record, root = report_record_for_row(cfg.row.table, cfg.row.eye_id, _knowledge_base(cfg, module))
        return [first_turns(record, 1)], root
    if _single(cfg):
        images = {m: str(Path(p).resolve()) for m, p in cfg.images.items() if p}
        prefix = image_prefix(images, load_phrasebook(None), random.Random(0))  # 'No CFP image.' as stage one writes
        text = _prompt(cfg) or "Write the diagnostic report for this eye."
        return [{"id": "case", "images": images, "conversations": [{"from": "human", "value": prefix + text}]}], Path()
    records = read_instructions(Path(cfg.instructions_dir) / f"{cfg.split}.jsonl")
    records = [r for r in records if not cfg.tasks or r.get("task") in cfg.tasks]
    records = records[: cfg.max_records] if cfg.max_records else records
    return records, image_root_of(cfg.instructions_dir, data.get("image_root"))


def _prompt(cfg: DictConfig) -> str | None:
    if cfg.get("prompt_file"):
        if cfg.prompt_file == "-":
            return sys.stdin.read().strip()
        path = Path(cfg.prompt_file)
        if not path.is_file():
            raise FileNotFoundError(f"prompt_file={path} does not exist")
        return path.read_text(encoding="utf-8").strip()
    return cfg.prompt


def _knowledge_base(cfg: DictConfig, module: Any) -> Any:
    """The knowledge base a row's prompt is phrased under: as asked, else the grounded export's, else the one the
    instructions' manifest records."""
    from grok.knowledge.manifest import resolve_knowledge_base

    asked = cfg.knowledge_base
    if asked.version is None and asked.path is None and module.grounding_parts is not None:
        return module.grounding_parts.conversation.kb
    return resolve_knowledge_base(asked.version, asked.path, cfg.instructions_dir)


def without_images(records: list[dict], modalities: list[str]) -> list[dict]:
    """Each record without its images of `modalities` (the missing-modality check): the image removed and its
    placeholder line replaced by the sentence stage one writes for an eye without it ('No OCT image.', the default
    phrasebook's `image_absent`), the quantity spans recorded after it moved with the text."""
    from grok.knowledge.instructions import IMAGE_NAMES
    from grok.knowledge.phrasing import load_phrasebook
    from grok.mllm.model import MODALITIES
    from grok.mllm.tokenizer import IMAGE_PLACEHOLDERS

    absent_line = load_phrasebook(None).choose("image_absent", random.Random(0))

    unknown = sorted(set(modalities) - set(MODALITIES))
    if unknown:
        raise ValueError(f"images_absent={modalities}: unknown modality {unknown}; expected some of {list(MODALITIES)}")
    out = []
    for record in records:
        turns = [dict(turn) for turn in record["conversations"]]
        spans = [list(span) for span in record.get("quantity_spans") or []]
        for modality in modalities:
            placeholder = f"{IMAGE_PLACEHOLDERS[MODALITIES.index(modality)]}\n"
            turn = next((i for i, t in enumerate(turns) if placeholder in t.get("value", "")), None)
            if turn is None:
                continue
            text = turns[turn]["value"]
            at = text.find(placeholder)
            replacement = absent_line.format(image=IMAGE_NAMES[modality]) + "\n"
            turns[turn]["value"] = text[:at] + replacement + text[at + len(placeholder) :]
            shift = len(replacement) - len(placeholder)
            for span in spans:
                if span[0] == turn and span[1] >= at + len(placeholder):
                    span[1], span[2] = span[1] + shift, span[2] + shift
        images = {m: path for m, path in (record.get("images") or {}).items() if m not in modalities}
        out.append({**record, "images": images, "conversations": turns, "quantity_spans": spans})
    return out


def with_other_eyes_images(records: list[dict], seed: int) -> list[dict]:
    """Each record with the images of another eye whose label set differs (a seeded, deterministic choice)."""
    rng = random.Random(seed)
    swapped = []
    for record in records:
        labels = set(record.get("labels") or [])
        donors = [r for r in records if set(r.get("labels") or []) != labels]
        if not donors:
            raise ValueError("images_from=other_eye needs eyes of at least two different label sets")
        swapped.append({**record, "images": rng.choice(donors)["images"]})
    return swapped


def _reports(
    cfg: DictConfig, module: Any, train_cfg: DictConfig, dataset: Any, source: str | None, skip_batches: int = 0
) -> Any:
    """The rows of predictions, after the first `skip_batches` batches: the language model's reports, or the rules'
    (mode=rules)."""
    if cfg.mode == "rules":
        from torch.utils.data import Subset

        from grok.grounding.pipeline import RulesReporter, rules_reports
        from grok.knowledge.writer import ReportWriter

        parts = module.grounding_parts
        if parts is None:
            raise ValueError(f"mode=rules needs a grounded export; {cfg.model_dir} was trained with grounding=none")
        reporter = RulesReporter(module.model, ReportWriter(parts.conversation.kb), parts.settings.estimate_marker)
        rest = Subset(dataset, range(min(skip_batches * cfg.batch_size, len(dataset)), len(dataset)))
        return rules_reports(reporter, rest, module.tokenizer, cfg.batch_size, source, cfg.device, cfg.progress)
    from grok.mllm.generate import generate_reports

    overrides = {key: value for key, value in OmegaConf.to_container(cfg.generation).items() if value is not None}
    settings = {**OmegaConf.to_container(train_cfg.get("generation") or {}), **overrides}
    parts = module.grounding_parts
    return generate_reports(
        module.model,
        module.tokenizer,
        dataset,
        cfg.batch_size,
        settings,
        cfg.device,
        cfg.progress,
        renderer=module.renderer,
        source=source,
        forbid_digits=bool(parts and parts.settings.forbid_digits),
        seed=cfg.seed,
        skip_batches=skip_batches,
    )


@hydra_entry("infer")
def main(cfg: DictConfig) -> Path | str:
    """Console entry point."""
    return run(cfg)
