"""Throughput of stage one (rule engine + chain-of-thought writer + JSON serialisation), one core.

    .venv/bin/python experiments/benchmarks/bench_generate.py [--table data/syntheye/biomarkers.parquet] [--eyes 4000]

Without --table it draws SynthEye biomarker rows (no images) with grok.data.synth's sampler. Prints records/s for
the default instruction mix (train: report, diagnosis, biomarker_qa, evidence, multiturn per eye) and for
report-only records, plus the engine alone. With --table it first times the table's read with and without the
schema check every stage runs on read (image files included).
"""

from __future__ import annotations

import argparse
import time

from grok.data.table import read_table
from grok.knowledge import evaluate_row, load_knowledge_base
from grok.knowledge.generate import GenerationPlan, RecordFactory
from grok.knowledge.instructions import InstructionBuilder
from grok.knowledge.phrasing import PhraseRng
from grok.knowledge.writer import ReportWriter


def synth_rows(n_eyes: int, seed: int = 0) -> list[dict]:
    from grok.data.synth.sampling import load_profiles, sample_subject
    from grok.schema.schema import load_schema

    schema, profiles = load_schema(), load_profiles()
    rows = []
    for index in range(n_eyes // 2):
        subject = sample_subject(index, [schema.label_names[index % len(schema.label_names)]], seed, profiles, schema)
        for eye, anatomy in subject.eyes.items():
            rows.append(
                {
                    **anatomy.biomarkers,
                    "subject_id": subject.subject_id,
                    "eye": eye,
                    "labels": ";".join(subject.labels),
                    "oct_path": f"oct/{subject.subject_id}_{eye}.png",
                    "cfp_path": f"cfp/{subject.subject_id}_{eye}.png",
                }
            )
    return rows


def best_rate(fn, repeat: int) -> float:
    """Items per CPU second of `fn()` (which returns the item count), best of `repeat` runs (robust to noisy
    neighbours, as timeit's min)."""
    rates = []
    for _ in range(repeat):
        start = time.process_time()
        count = fn()
        rates.append(count / (time.process_time() - start))
    return max(rates)


def full_records(factory: RecordFactory, rows: list[dict], split: str) -> int:
    """Engine + writer + facts + JSON lines, exactly as grok-generate writes them."""
    return sum(len(factory.records(row, f"{row['subject_id']}_{row['eye']}", split)[1]) for row in rows)


def engine_and_writer(factory: RecordFactory, rows: list[dict], split: str) -> int:
    """Engine + writer only: the conversations' text, without facts and JSON serialisation."""
    count = 0
    for row in rows:
        case = factory.case(row, f"{row['subject_id']}_{row['eye']}")
        for task, n in factory.plan.mix[split].items():
            for k in range(n):
                rng = PhraseRng(f"0:{case.eye_id}:{task}:{k}")
                style = factory.style(split, rng) if task == "report" else "structured"
                factory.builder.conversation(task, case, style, rng)
                count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", default=None)
    parser.add_argument("--eyes", type=int, default=4000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    kb = load_knowledge_base()
    rows = read_table(args.table, validate=False).to_dict("records") if args.table else synth_rows(args.eyes)
    if args.table:
        for label, validate in (("read only", False), ("read + schema check", True)):
            rate = best_rate(lambda validate=validate: len(read_table(args.table, validate=validate)), args.repeat)
            print(f"table {label:22s} {1000 * len(rows) / rate:8.1f} ms ({len(rows)} rows)")
    builder = InstructionBuilder(ReportWriter(kb))
    mix = {
        "train": {"report": 1, "diagnosis": 1, "biomarker_qa": 1, "evidence": 1, "multiturn": 1},
        "test": {"report": 1},
    }
    weights = {"train": {"structured": 0.7, "narrative": 0.3}, "test": {"structured": 1.0}}
    plan = GenerationPlan(mix=mix, style_weights=weights, fractions={"train": 0.9, "test": 0.1})
    factory = RecordFactory(kb, builder, plan)
    full_records(factory, rows[:200], "train")  # warm-up (caches, imports)
    print(f"eyes: {len(rows)} (CPU time on one core, best of {args.repeat})")
    engine_rate = best_rate(lambda: len([evaluate_row(row, kb) for row in rows]), args.repeat)
    print(f"engine only: {engine_rate:,.0f} eyes/s")
    for split, name in (("train", "default train mix, 5 records/eye"), ("test", "report only, 1 record/eye")):
        for label, fn in (("engine + writer", engine_and_writer), ("full JSONL records", full_records)):
            rate = best_rate(lambda fn=fn, split=split: fn(factory, rows, split), args.repeat)
            print(f"{name:34s} {label:20s} {rate:8,.0f} records/s")


if __name__ == "__main__":
    main()
