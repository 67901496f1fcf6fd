"""Reference baselines the runner scores next to the models: majority class, knowledge-engine oracle, shuffled."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from grok.bench.predictions import Prediction
from grok.bench.references import Reference
from grok.schema.schema import Schema


def majority_baseline(references: Sequence[Reference], schema: Schema) -> list[Prediction]:
    """Every eye gets the most frequent reference label set, as a one-sentence report with one-hot scores."""
    most_common = Counter(r.labels for r in references).most_common(1)[0][0]
    displays = {label.name: label.display for label in schema.labels}
    text = "Conclusion: " + " and ".join(displays[label] for label in most_common) + "."
    scores = {name: float(name in most_common) for name in schema.label_names}
    return [Prediction(r.id, text, scores) for r in references]


def oracle_baseline(references: Sequence[Reference]) -> list[Prediction]:
    """The knowledge engine's own reports (the references themselves): the ceiling every parser should reach."""
    return [Prediction(r.id, r.text) for r in references]


def shuffled_baseline(references: Sequence[Reference], seed: int = 0) -> list[Prediction]:
    """Each eye gets another eye's reference report (a derangement): fluent, self-consistent, but not grounded in
    this eye's facts. It should score badly on task 3."""
    n = len(references)
    if n < 2:
        return [Prediction(r.id, r.text) for r in references]
    order = np.random.default_rng(seed).permutation(n)
    shifted = np.roll(order, 1)  # a cyclic shift of a random order: nobody keeps their own report
    donor = np.empty(n, dtype=int)
    donor[order] = shifted
    return [Prediction(r.id, references[int(d)].text) for r, d in zip(references, donor, strict=True)]
