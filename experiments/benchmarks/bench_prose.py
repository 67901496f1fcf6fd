"""The benchmark's parsers on the real-prose fixture: task-1 macro-F1 (each report scored as its own prediction) and
quantity extraction recall/precision, per half (tune, held-out), with the reports each half gets wrong.

Usage: .venv/bin/python experiments/benchmarks/bench_prose.py [--errors]

The fixture (tests/fixtures/bench/prose, README there) was split before any parser tuning; the `heldout` half is
the figure to quote. Extraction compares the (schema key, value) pairs the extractor reads with the labelled ones.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from grok.bench.classification import classification_metrics
from grok.bench.diagnosis import parse_diagnosis
from grok.bench.text import AnalysedText
from grok.bench.vocabulary import build_vocabulary
from grok.knowledge import load_knowledge_base
from grok.schema.schema import load_schema

PROSE = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "bench" / "prose" / "reports.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--errors", action="store_true", help="list the reports each half gets wrong")
    args = parser.parse_args()
    schema = load_schema()
    vocabulary = build_vocabulary(schema, load_knowledge_base())
    records = yaml.safe_load(PROSE.read_text(encoding="utf-8"))
    for split in ("tune", "heldout"):
        truth, predicted, hits, found_total, wanted_total = [], [], 0, 0, 0
        for record in (r for r in records if r["split"] == split):
            analysed = AnalysedText(record["report"], vocabulary)
            labels = list(parse_diagnosis(analysed).labels)
            truth.append(record["labels"])
            predicted.append(labels)
            values = record["quantities"].items()
            wanted = {(k, float(v)) for k, vs in values for v in (vs if isinstance(vs, list) else [vs])}
            found = {(q.biomarker, q.value) for q in analysed.quoted_values}
            hits, found_total, wanted_total = (
                hits + len(wanted & found),
                found_total + len(found),
                wanted_total + len(wanted),
            )
            if args.errors and set(labels) != set(record["labels"]):
                print(f"  {split} {record['id']}: labelled {record['labels']}, parsed {labels}")
            if args.errors and wanted != found:
                print(f"  {split} {record['id']}: missed {sorted(wanted - found)}, extra {sorted(found - wanted)}")
        metrics = classification_metrics(truth, predicted, schema.label_names)
        print(
            f"{split}: {len(truth)} reports; task-1 macro-F1 {metrics['macro_f1']:.3f}, "
            f"accuracy {metrics['accuracy']:.3f};"
            f" extraction recall {hits / wanted_total:.3f}, precision {hits / found_total:.3f}"
            f" ({hits} of {wanted_total} labelled values, {found_total} read)"
        )


if __name__ == "__main__":
    main()
