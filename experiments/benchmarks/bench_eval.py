"""Time the GOU benchmark on 10,000 predictions: tasks 1 and 3 and the non-Java metrics of task 2.

Usage: .venv/bin/python experiments/benchmarks/bench_eval.py [--n 10000] [--embedding] [--meteor]

References are the hand-written test fixtures (narrative and structured) repeated under new eye ids; predictions are
a mix of exact references, shuffled reports and edited numbers, so every parser path is exercised. METEOR (Java) and
the MiniLM embedding similarity are off by default (the issue's timed setting) and timed separately when asked.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import yaml

from grok.bench.clinical import ClinicalScorer
from grok.bench.predictions import Prediction
from grok.bench.references import Reference
from grok.bench.report_quality import EmbeddingSimilarity, report_quality
from grok.bench.rubric import DeterministicRubric, RubricSettings
from grok.bench.runner import GOUBenchmark
from grok.bench.vocabulary import build_vocabulary
from grok.knowledge.parser import load_knowledge_base
from grok.schema.schema import load_schema

FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "bench" / "reports.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--embedding", action="store_true", help="also time the MiniLM BERTScore")
    parser.add_argument("--meteor", action="store_true", help="also time METEOR (Java)")
    args = parser.parse_args()
    records = yaml.safe_load(FIXTURES.read_text(encoding="utf-8"))
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
    schema, kb = load_schema(), load_knowledge_base()
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
    print(f"{args.n} predictions, {words:.0f} words per report on average")
    print(
        f"tasks 1+2+3, rubric, bootstrap CIs (meteor={args.meteor}, embedding={args.embedding}): {elapsed:.1f} s wall, "
        f"{cpu:.1f} s CPU"
    )
    task1, task3 = result.metrics["task1"], result.metrics["task3"]
    print(f"accuracy {task1['accuracy']:.3f}, clinical score {task3['clinical_score']:.3f}")
    start, cpu = time.perf_counter(), time.process_time()
    report_quality([p.text for p in predictions], [r.text for r in references])
    print(
        f"of which task 2 (BLEU-1..4, ROUGE-L, CIDEr; pycocoevalcap + rapidfuzz): {time.perf_counter() - start:.1f} s"
    )


if __name__ == "__main__":
    main()
