"""`grok-eval` end to end: references + predictions files (+ baselines) -> scores -> outputs."""

from __future__ import annotations

import glob
import logging
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from grok.bench.absent import image_keys_of
from grok.bench.baselines import majority_baseline, oracle_baseline, shuffled_baseline
from grok.bench.clinical import ClinicalScorer
from grok.bench.facts import with_table_facts
from grok.bench.predictions import load_predictions
from grok.bench.references import Reference, load_references
from grok.bench.report import write_outputs
from grok.bench.rubric import DeterministicRubric
from grok.bench.runner import GOUBenchmark, ModelScores, headline
from grok.bench.vocabulary import build_vocabulary
from grok.knowledge.base import KnowledgeBase
from grok.knowledge.manifest import resolve_knowledge_base
from grok.schema.schema import load_schema

log = logging.getLogger(__name__)


def prediction_files(cfg: DictConfig) -> list[Path]:
    """The files to score: `predictions` when given, else every match of `predictions_glob` (sorted)."""
    if cfg.predictions:
        files = [Path(p) for p in cfg.predictions]
        missing = [str(p) for p in files if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"config key 'predictions': file(s) not found: {missing}")
        return files
    return sorted(Path(p) for p in glob.glob(str(cfg.predictions_glob)))


def knowledge_base(cfg: DictConfig) -> KnowledgeBase:
    """The knowledge base the config names (`knowledge_base.version` / `.path`), else the one stage one recorded in
    the manifest beside `reference_path`."""
    return resolve_knowledge_base(
        cfg.knowledge_base.version, cfg.knowledge_base.path, Path(cfg.reference_path).parent, load_schema()
    )


def evaluation_references(cfg: DictConfig, kb: KnowledgeBase) -> list[Reference]:
    """The references of `reference_path`; those without `facts` get them from `reference_table` when given."""
    references = load_references(cfg.reference_path, kb.schema)
    if cfg.get("reference_table"):
        references = with_table_facts(references, cfg.reference_table, kb)
    return references


def build_benchmark(cfg: DictConfig, references: list[Reference], kb: KnowledgeBase | None = None) -> GOUBenchmark:
    """The benchmark object a config describes."""
    kb = kb or knowledge_base(cfg)
    schema = kb.schema
    vocabulary = build_vocabulary(schema, kb, cfg.parser.context_rules)
    settings = instantiate(cfg.rubric, _convert_="all")
    return GOUBenchmark(
        references,
        schema,
        vocabulary,
        ClinicalScorer(vocabulary, kb, cfg.quantitative_tolerance),
        DeterministicRubric(settings, schema),
        meteor=cfg.meteor,
        embedding=instantiate(cfg.embedding) if cfg.get("embedding") else None,
        bootstrap_resamples=cfg.bootstrap.resamples,
        seed=cfg.seed,
        judge=instantiate(cfg.judge) if cfg.get("judge") else None,
        image_keys=image_keys_of(schema, cfg.get("image_modalities")),
    )


def _input_reliance(benchmark: GOUBenchmark, other: Path, ids: list[str], own: list[list[str]]) -> dict[str, Any]:
    """How often a model's stated diagnosis changes when its reports were written with other eyes' images (`other`:
    the same model's predictions for the same eyes, `grok-infer images_from=other_eye`)."""
    from grok.bench.diagnosis import parse_diagnosis
    from grok.bench.grounding import input_reliance
    from grok.bench.text import AnalysedText

    aligned = load_predictions(other, benchmark.schema.label_names).aligned(ids)
    swapped = [list(parse_diagnosis(AnalysedText(p.text, benchmark.vocabulary)).labels) for p in aligned]
    return {**input_reliance(own, swapped), "file": str(other)}


def _unique_model_name(model: str, path: Path, taken: set[str]) -> str:
    """`model`, or the file's name when an earlier file of this run has that model name (grok-infer writes one model
    name in `<model>_test.jsonl` and `<model>_test_no_cfp.jsonl`), so neither's results overwrite the other's."""
    if model not in taken:
        return model
    name = candidate = path.name.removesuffix(".jsonl")
    index = 2
    while candidate in taken:
        candidate, index = f"{name}_{index}", index + 1
    log.warning("%s: model name %r is already taken by an earlier file; scored as %r", path, model, candidate)
    return candidate


def run_evaluation(cfg: DictConfig) -> dict[str, Any]:
    """Score every predictions file and the enabled baselines; write the outputs; return the headline numbers."""
    kb = knowledge_base(cfg)
    references = evaluation_references(cfg, kb)
    benchmark = build_benchmark(cfg, references, kb)
    if benchmark.facts_missing:
        log.warning("task 3 not scored: %s", benchmark.facts_missing)
    ids = [r.id for r in references]
    results: list[ModelScores] = []
    files = prediction_files(cfg)
    if not files:
        log.warning(
            "no predictions files (predictions=[] and nothing matches %s): scoring the baselines only",
            cfg.predictions_glob,
        )
    for path in files:
        loaded = load_predictions(path, benchmark.schema.label_names, images=list(benchmark.image_keys))
        loaded.model = _unique_model_name(loaded.model, path, {r.model for r in results})
        aligned = loaded.aligned(ids)
        for issue in loaded.issues[:20]:
            log.warning("%s", issue)
        if len(loaded.issues) > 20:
            log.warning("%s: %d more issue(s), see metrics.json", path, len(loaded.issues) - 20)
        scored = benchmark.score(loaded.model, aligned, [str(i) for i in loaded.issues])
        other = Path(cfg.input_reliance_dir) / path.name if cfg.get("input_reliance_dir") else None
        if other is not None and other.is_file():
            scored.metrics["input_reliance"] = _input_reliance(benchmark, other, ids, scored.parsed_labels)
        results.append(scored)
    baselines = {
        "majority": lambda: majority_baseline(references, benchmark.schema),
        "oracle": lambda: oracle_baseline(references),
        "shuffled": lambda: shuffled_baseline(references, cfg.seed),
    }
    for name, enabled in cfg.baselines.items():
        if enabled:
            results.append(benchmark.score(f"baseline_{name}", baselines[name]()))
    context = {
        "reference_path": str(cfg.reference_path),
        "reference_table": None if not cfg.get("reference_table") else str(cfg.reference_table),
        "n_references": len(references),
        "config": OmegaConf.to_container(cfg, resolve=False),
    }
    paths = write_outputs(results, Path(cfg.output_dir), benchmark.schema.label_names, cfg.write_per_report, context)
    log.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return {r.model: headline(r.metrics) for r in results}
