"""Subject-level splits: stable, disjoint, close to the requested fractions."""

from __future__ import annotations

from collections import Counter

import pytest

from grok.data.splits import assign_splits, split_of


def test_splits_are_by_subject_stable_and_near_fractions() -> None:
    subjects = [f"S{index:06d}" for index in range(4000)]
    splits = assign_splits(subjects, seed=3)
    counts = Counter(splits.values())
    assert abs(counts["train"] / 4000 - 0.8) < 0.03 and abs(counts["test"] / 4000 - 0.1) < 0.02
    assert splits == assign_splits(reversed(subjects), seed=3)  # order-independent
    assert {split_of(s, seed=3) for s in subjects[:10]} <= {"train", "val", "test"}
    assert assign_splits(subjects, seed=4) != splits


def test_bad_fractions_are_rejected() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        split_of("S1", fractions={"train": -1.0, "test": 2.0})
