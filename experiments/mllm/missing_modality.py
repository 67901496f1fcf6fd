"""Reports with a modality missing: diagnosis macro-F1 and numbers stated for the absent image's quantities.

    cd <root>                                    # a `make demo` output (artifacts/mllm, artifacts/predictions)
    grok-infer images_absent=[cfp]               # OCT only  -> artifacts/predictions/grok_test_no_cfp.jsonl
    grok-infer images_absent=[oct]               # CFP only  -> artifacts/predictions/grok_test_no_oct.jsonl
    .venv/bin/python experiments/mllm/missing_modality.py [--model grok] [--split test]

Prints, per condition (both images, OCT only, CFP only), the benchmark's task-1 macro-F1 and accuracy against the
split's labels and how many numbers the reports state for quantities of the absent image (the export's quantity
tokens name which quantities each image measures; a grounded report can only state an image-derived number that
the read-out estimated from that image, so this must be 0). Writes nothing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from grok.bench.classification import classification_metrics
from grok.bench.diagnosis import parse_diagnosis
from grok.bench.text import AnalysedText
from grok.bench.vocabulary import build_vocabulary
from grok.grounding.config import GroundingSettings, knowledge_base_of, quantity_tokens_of
from grok.mllm.export import load_exported_mllm

CONDITIONS = (("both images", ()), ("OCT only", ("cfp",)), ("CFP only", ("oct",)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=".")
    parser.add_argument("--model", default="grok")
    parser.add_argument("--split", default="test")
    args = parser.parse_args()
    root = Path(args.root)
    _, cfg = load_exported_mllm(root / "artifacts" / "mllm")
    settings = GroundingSettings.from_config(cfg.model.get("grounding"))
    if settings is None:
        raise SystemExit("the export is not grounded (grounding=none): its numbers carry no quantity")
    kb = knowledge_base_of(settings)
    tokens = quantity_tokens_of(settings, kb)
    vocabulary = build_vocabulary(kb.schema, kb)
    records = Path(cfg.data.instructions_dir) / f"{args.split}.jsonl"
    with records.open(encoding="utf-8") as handle:
        labels = {record["id"]: list(record.get("labels") or []) for record in map(json.loads, handle)}
    print("| images | reports | macro-F1 | accuracy | numbers stated for the absent image's quantities |")
    print("|---|---|---|---|---|")
    for name, absent in CONDITIONS:
        suffix = "".join(f"_no_{modality}" for modality in absent)
        path = root / "artifacts" / "predictions" / f"{args.model}_{args.split}{suffix}.jsonl"
        if not path.is_file():
            print(f"| {name} | missing: {path} (run grok-infer images_absent=[{','.join(absent)}]) | | | |")
            continue
        with path.open(encoding="utf-8") as handle:
            predictions = [json.loads(line) for line in handle]
        truth = [labels[p["id"]] for p in predictions]
        guesses = [list(parse_diagnosis(AnalysedText(p["prediction"], vocabulary)).labels) for p in predictions]
        metrics = classification_metrics(truth, guesses, kb.schema.label_names)
        absent_keys = {key for modality in absent for key in tokens.image_keys.get(modality, ())}
        stated = sum(
            1
            for p in predictions
            for q in ((p.get("grounding") or {}).get("quantities") or [])
            if q.get("kind") == "value" and q.get("key") in absent_keys and q.get("value") is not None
        )
        count = "–" if not absent else str(stated)
        print(f"| {name} | {len(predictions)} | {metrics['macro_f1']:.3f} | {metrics['accuracy']:.3f} | {count} |")


if __name__ == "__main__":
    main()
