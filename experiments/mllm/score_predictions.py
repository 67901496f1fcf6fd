"""Diagnosis macro-F1 of a predictions JSONL against its split's labels (the benchmark's parser and metric).

    .venv/bin/python experiments/mllm/score_predictions.py <predictions.jsonl> <instructions>/test.jsonl

A quick figure for ablations; `grok-eval` gives the full benchmark with confidence intervals.
"""

from __future__ import annotations

import argparse
import json

from grok.bench.classification import classification_metrics
from grok.bench.diagnosis import parse_diagnosis
from grok.bench.text import AnalysedText
from grok.bench.vocabulary import build_vocabulary
from grok.knowledge.parser import load_knowledge_base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("predictions")
    parser.add_argument("records", help="the split's instruction JSONL (its records carry `labels`)")
    args = parser.parse_args()
    kb = load_knowledge_base()
    vocabulary = build_vocabulary(kb.schema, kb)
    with open(args.records, encoding="utf-8") as handle:
        labels = {record["id"]: list(record.get("labels") or []) for record in map(json.loads, handle)}
    with open(args.predictions, encoding="utf-8") as handle:
        predictions = [json.loads(line) for line in handle]
    truth = [labels[p["id"]] for p in predictions]
    guesses = [list(parse_diagnosis(AnalysedText(p["prediction"], vocabulary)).labels) for p in predictions]
    metrics = classification_metrics(truth, guesses, kb.schema.label_names)
    print(f"{args.predictions}: macro-F1 {metrics['macro_f1']:.3f} over {len(predictions)} reports")


if __name__ == "__main__":
    main()
