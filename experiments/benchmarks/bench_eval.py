"""Time the GOU benchmark on 10,000 predictions: tasks 1 and 3 and the non-Java metrics of task 2.

Usage: .venv/bin/python experiments/benchmarks/bench_eval.py [--n 10000] [--fixture prose|short] [--embedding]
       [--meteor]

References are repeated under new eye ids from a test fixture: `prose` (default) the 166 paper-style narrative
reports of tests/fixtures/bench/prose (130-170 words, facts computed from their biomarker table as grok-eval
reference_table=... does), `short` the hand-written fixtures of tests/fixtures/bench/reports.yaml (~90 words,
narrative and structured). Predictions are a mix of exact references, other eyes' reports and edited numbers, so
every parser path is exercised. METEOR (Java) and the MiniLM embedding similarity are off by default (the issue's
timed setting) and timed separately when asked. Prints wall and CPU time and the time of the parsers alone.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import yaml

from grok.bench.clinical import ClinicalScorer
from grok.bench.diagnosis import parse_diagnosis
from grok.bench.facts import with_table_facts
from grok.bench.predictions import Prediction
from grok.bench.references import Reference
from grok.bench.report_quality import EmbeddingSimilarity, report_quality
from grok.bench.rubric import DeterministicRubric, RubricSettings
from grok.bench.runner import GOUBenchmark
from grok.bench.text import AnalysedText
from grok.bench.vocabulary import build_vocabulary
from grok.knowledge.parser import load_knowledge_base
from grok.schema.schema import load_schema

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "bench" / "reports.yaml"
PROSE = ROOT / "tests" / "fixtures" / "bench" / "prose"


def fixture_records(name: str, kb) -> list[dict]:
    """(report, labels, facts) records of a test fixture; the prose fixture's facts come from its table."""
    if name == "short":
        return yaml.safe_load(FIXTURES.read_text(encoding="utf-8"))
    records = yaml.safe_load((PROSE / "reports.yaml").read_text(encoding="utf-8"))
    references = [Reference(r["id"], r["report"], tuple(r["labels"])) for r in records]
    completed = with_table_facts(references, PROSE / "table.csv", kb)
    return [{"report": r.text, "labels": list(r.labels), "facts": r.facts} for r in completed]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--fixture", choices=["prose", "short"], default="prose")
    parser.add_argument("--embedding", action="store_true", help="also time the MiniLM BERTScore")
    parser.add_argument("--meteor", action="store_true", help="also time METEOR (Java)")
    args = parser.parse_args()
    schema, kb = load_schema(), load_knowledge_base()
    records = fixture_records(args.fixture, kb)
    rng = np.random.default_rng(0)
    references, predictions = [], []
    for i in range(args.n):
        record = records[i % len(records)]
        eye_id = f"S{i:06d}_{'RL'[i % 2]}"
        references.append(Reference(eye_id, record["report"], tuple(record["labels"]), record["facts"]))
        kind = rng.integers(3)
        text = record["report"] if kind == 0 else records[int(rng.integers(len(records)))]["report"]
        if kind == 2:
            text = text.replace("0", "5", 1)
        predictions.append(Prediction(eye_id, text))
    words = np.mean([len(r.text.split()) for r in references])
    vocabulary = build_vocabulary(schema, kb)
    settings = yaml.safe_load((Path(__file__).resolve().parents[2] / "conf" / "eval.yaml").read_text())["rubric"]
    settings.pop("_target_")
    benchmark = GOUBenchmark(
        references,
        schema,
        vocabulary,
        ClinicalScorer(vocabulary, kb),
        DeterministicRubric(RubricSettings(**settings), schema),
        meteor=args.meteor,
        embedding=EmbeddingSimilarity() if args.embedding else None,
        bootstrap_resamples=1000,
    )
    start, cpu = time.perf_counter(), time.process_time()
    result = benchmark.score("bench", predictions)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(f"load average {os.getloadavg()[0]:.2f} (2 shared cores: timings are noisy)")
    print(f"{args.n} predictions ({args.fixture} fixture), {words:.0f} words per report on average")
    print(
        f"tasks 1+2+3, rubric, bootstrap CIs (meteor={args.meteor}, embedding={args.embedding}): {elapsed:.1f} s wall, "
        f"{cpu:.1f} s CPU"
    )
    task1, task3 = result.metrics["task1"], result.metrics["task3"]
    print(f"accuracy {task1['accuracy']:.3f}, clinical score {task3['clinical_score']:.3f}")
    start = time.perf_counter()
    report_quality([p.text for p in predictions], [r.text for r in references])
    print(
        f"of which task 2 (BLEU-1..4, ROUGE-L, CIDEr; pycocoevalcap + rapidfuzz): {time.perf_counter() - start:.1f} s"
    )
    start = time.perf_counter()
    for prediction in predictions:
        analysed = AnalysedText(prediction.text, vocabulary)
        parse_diagnosis(analysed)
        analysed.quoted_values, analysed.finding_mentions  # noqa: B018 (the parsers' cached work)
    print(f"of which the parsers (ConText diagnosis, findings, quantities): {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
