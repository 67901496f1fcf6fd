"""Subject-level train/val/test assignment shared by every stage (never by row, so no subject leaks)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

DEFAULT_FRACTIONS: Mapping[str, float] = {"train": 0.8, "val": 0.1, "test": 0.1}


def split_of(subject_id: str, seed: int = 0, fractions: Mapping[str, float] = DEFAULT_FRACTIONS) -> str:
    """The split of one subject: a stable hash of (seed, subject) mapped onto the cumulative fractions.

    The answer depends only on the subject, the seed and the fractions, so it is identical across stages,
    machines and table subsets, and both eyes (and all visits) of a subject always land together.
    """
    total = sum(fractions.values())
    if total <= 0 or any(value < 0 for value in fractions.values()):
        raise ValueError(f"split fractions must be non-negative and sum to more than 0, got {dict(fractions)}")
    digest = hashlib.sha256(f"{seed}:{subject_id}".encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64 * total
    cumulative = 0.0
    for name, fraction in fractions.items():
        cumulative += fraction
        if position < cumulative:
            return name
    return list(fractions)[-1]


def assign_splits(
    subject_ids: Iterable[str], seed: int = 0, fractions: Mapping[str, float] = DEFAULT_FRACTIONS
) -> dict[str, str]:
    """Map each distinct subject id to its split."""
    return {subject: split_of(subject, seed, fractions) for subject in dict.fromkeys(map(str, subject_ids))}
