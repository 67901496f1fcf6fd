"""Where the pipeline's diagnoses fail: thresholding read-out estimates vs a classifier trained for each finding.

    .venv/bin/python experiments/mllm/finding_readout.py [--root .] [--split test]

Loads the grounded export under `<root>/artifacts/mllm` (run from `<root>`: the export's paths are relative to it),
encodes every eye of stage one's report records (train and `--split`), and prints the benchmark's task-1 macro-F1 and
accuracy of the diagnoses the knowledge base derives (`diagnoses_from_findings`) from:
- stage one's findings (the knowledge engine on the true values: the reference reports' figure),
- the engine's findings on the values in force of `grounding.source=auto` (the prompt's systemic values, the
  read-out head's estimates of the rest): the `grok-rules` pipeline baseline,
- one logistic regression per knowledge-base finding (standardised inputs, regularisation by 4-fold cross-validation
  on the train eyes), fitted on the train eyes' findings, on three inputs: the read-out estimates plus the stated
  systemic values, the flattened frozen encoder tokens plus the systemic values, and both;
- the union of those classifiers' findings with the engine's findings on the estimates;
- one logistic regression per label (the diagnosis directly, no findings);
then, per finding, the false positives and negatives of the engine on the estimates and of the classifiers on the
estimates. Writes nothing.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from readout_quality import eye_dataset, measure  # this folder is on sys.path when the script runs
from sklearn.linear_model import LogisticRegressionCV
from sklearn.preprocessing import StandardScaler

from grok.bench.classification import classification_metrics
from grok.knowledge import load_knowledge_base
from grok.knowledge.engine import diagnoses_from_findings, evaluate_row
from grok.mllm.export import load_exported_mllm

SYSTEMIC = ("age_years", "sbp_mmhg", "dbp_mmhg", "hba1c_mmol_mol")
CS = (0.001, 0.01, 0.1, 1.0)


def values_in_force(record: Mapping, estimates: np.ndarray, keys: Sequence[str]) -> dict[str, float]:
    """The row `grok-rules` assesses: the stated systemic values, the read-out estimates of the rest."""
    row = {k: v for k, v in record["facts"]["systemic"].items() if v is not None}
    row.update({k: float(v) for k, v in zip(keys, estimates, strict=True) if k not in row and not math.isnan(v)})
    return row


def inputs(measured: Mapping[str, np.ndarray], records: Sequence[Mapping], kind: str) -> np.ndarray:
    """Classifier inputs per eye: `est` read-out estimates, `flat` frozen tokens, `sys` stated systemic values."""
    parts = []
    if "flat" in kind:
        parts += [measured[name] for name in sorted(measured) if name.startswith("features_")]
    if "est" in kind:
        parts.append(np.nan_to_num(measured["estimates"]))
    if "sys" in kind:
        parts.append(np.array([[float(r["facts"]["systemic"].get(k) or 0.0) for k in SYSTEMIC] for r in records]))
    return np.hstack(parts)


def fitted_sets(x_train, x_test, train_sets: Sequence[set], names: Sequence[str]) -> list[set]:
    """Per test eye, the names whose one-vs-rest logistic regression (fitted on `train_sets`) says yes."""
    scaler = StandardScaler().fit(x_train)
    x_train, x_test = scaler.transform(x_train), scaler.transform(x_test)
    predicted: list[set] = [set() for _ in range(len(x_test))]
    for name in names:
        y = np.array([name in s for s in train_sets])
        if y.sum() < 3 or (~y).sum() < 3:
            continue
        classifier = LogisticRegressionCV(Cs=list(CS), max_iter=3000, cv=4).fit(x_train, y)
        for eye in np.nonzero(classifier.predict(x_test))[0]:
            predicted[eye].add(name)
    return predicted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=".")
    parser.add_argument("--split", default="test")
    args = parser.parse_args()
    torch.manual_seed(0)
    root = Path(args.root)
    module, cfg = load_exported_mllm(root / "artifacts" / "mllm")
    kb = load_knowledge_base(path=root / "artifacts" / "mllm" / "knowledge_base.yaml")
    instructions = Path(cfg.data.instructions_dir)
    splits = {}
    for split in ("train", args.split):
        dataset = eye_dataset(module, cfg, instructions, split)
        splits[split] = (dataset.records, measure(module, dataset))
    (train, train_measured), (test, test_measured) = splits["train"], splits[args.split]
    keys = module.model.grounding.tokens.keys
    labels = [label.name for label in kb.schema.labels]
    findings = sorted(kb.findings)
    truth = [r["labels"] for r in test]

    def show(name: str, finding_sets: Sequence[set] | None = None, label_sets: Sequence | None = None) -> None:
        if label_sets is None:
            label_sets = [
                diagnoses_from_findings(kb, f, r["facts"]["systemic"]) for f, r in zip(finding_sets, test, strict=True)
            ]
        metrics = classification_metrics(truth, [list(s) for s in label_sets], labels)
        print(f"| {name} | {metrics['macro_f1']:.3f} | {metrics['accuracy']:.3f} |")

    print(f"{len(train)} train eyes, {len(test)} {args.split} eyes\n")
    print("| diagnoses from | macro-F1 | accuracy |\n|---|---|---|")
    engine = [set(r["facts"]["findings"]) for r in test]  # stage one's: the engine on the true values
    show("engine on the true values", engine)
    on_estimates = [
        set(evaluate_row(values_in_force(r, test_measured["estimates"][i], keys), kb).finding_ids)
        for i, r in enumerate(test)
    ]
    show("engine on the values in force (`grok-rules`)", on_estimates)
    train_findings = [set(r["facts"]["findings"]) for r in train]
    decided, direct = {}, {}
    for kind in ("est+sys", "flat+sys", "flat+est+sys"):
        x_train, x_test = inputs(train_measured, train, kind), inputs(test_measured, test, kind)
        decided[kind] = fitted_sets(x_train, x_test, train_findings, findings)
        direct[kind] = fitted_sets(x_train, x_test, [set(r["labels"]) for r in train], labels)
        show(f"finding classifiers [{kind}]", decided[kind])
        show(
            f"finding classifiers [{kind}] + engine on the values in force",
            [d | e for d, e in zip(decided[kind], on_estimates, strict=True)],
        )
        show(f"label classifiers [{kind}]", label_sets=direct[kind])
    print(
        "\n| finding | true | engine on values in force: false +, false - | classifiers [est+sys]: false +, false - |"
    )
    print("|---|---|---|---|")
    for finding in findings:
        true = [finding in t for t in engine]
        errors = []
        for sets in (on_estimates, decided["est+sys"]):
            said = [finding in s for s in sets]
            false_positives = sum(s and not t for s, t in zip(said, true, strict=True))
            false_negatives = sum(t and not s for s, t in zip(said, true, strict=True))
            errors.append(f"{false_positives}, {false_negatives}")
        print(f"| {finding} | {sum(true)} | {errors[0]} | {errors[1]} |")


if __name__ == "__main__":
    main()
