"""Hand-built biomarker rows for the knowledge tests (independent of the SynthEye generator)."""

from __future__ import annotations

import random
from typing import Any

import pandas as pd

from grok.knowledge.base import KnowledgeBase


def normal_row(kb: KnowledgeBase, age: float = 55.0, sex: str = "F") -> dict[str, Any]:
    """Every assessed biomarker at the middle of its reference range (lesion counts 0): no finding fires."""
    row: dict[str, Any] = {"age_years": age, "sex": sex}
    for name, biomarker in kb.schema.biomarkers.items():
        bounds = kb.reference_range(name, age, sex)
        if bounds is None:
            continue
        value = (bounds[0] + bounds[1]) / 2
        row[name] = round(value) if biomarker.dtype == "int" else value
    return row


def random_row(kb: KnowledgeBase, rng: random.Random, missing_share: float = 0.1) -> dict[str, Any]:
    """A row with values spread well beyond the reference ranges and some missing, for property tests."""
    row: dict[str, Any] = {"age_years": float(rng.randint(40, 69)), "sex": rng.choice("FM")}
    for name, biomarker in kb.schema.biomarkers.items():
        bounds = kb.reference_range(name, row["age_years"], row["sex"])
        if bounds is None or rng.random() < missing_share:
            continue
        low, high = bounds
        if biomarker.dtype == "int":
            row[name] = rng.choice([0, 0, 0, rng.randint(1, 30)])
            continue
        width = (high - low) or 1.0
        value = rng.uniform(low - 0.6 * width, high + 0.6 * width)
        if biomarker.valid_range:
            value = min(max(value, biomarker.valid_range[0]), biomarker.valid_range[1])
        row[name] = value
    return row


def make_table(kb: KnowledgeBase, n_subjects: int, seed: int = 0) -> pd.DataFrame:
    """A two-eye-per-subject table with ids, image paths and labels from the engine's own view of random rows."""
    from grok.knowledge.engine import evaluate_row

    rng = random.Random(seed)
    rows = []
    for index in range(n_subjects):
        subject = f"S{index:06d}"
        for eye in "RL":
            row = random_row(kb, rng)
            row["sex"] = "F" if index % 2 else "M"
            labels = evaluate_row(row, kb).labels if rng.random() < 0.8 else [rng.choice(kb.schema.label_names)]
            row.update(
                subject_id=subject,
                eye=eye,
                visit=0,
                oct_path=f"oct/{subject}_{eye}.png",
                cfp_path=f"cfp/{subject}_{eye}.png",
                labels=";".join(labels),
            )
            rows.append(row)
    return pd.DataFrame(rows)
