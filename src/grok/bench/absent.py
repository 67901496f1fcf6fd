"""Quantities a report states for an image that was absent when it was written (target 0).

A prediction row may carry `images_absent` (e.g. `["oct"]`: the report was written from the CFP alone; grok-infer
`images_absent=[...]` writes it). Such a report has no value to state for the quantities the missing image measures:
every number task 3's extraction (`AnalysedText.quoted_values`) ties to one of them is counted. Which schema
quantities each image measures is the config's `image_modalities` (image -> schema modalities, the grounding
config's mapping: `{oct: [oct], cfp: [cfp, lesion]}`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from grok.bench.quantities import QuotedValue
from grok.schema.schema import Schema
from grok.schema.units import canonical_unit, convert
from grok.utils.errors import InputError


def image_keys_of(schema: Schema, image_modalities: Mapping[str, Iterable[str]] | None) -> dict[str, frozenset[str]]:
    """Image -> the schema keys of the quantities it measures (`image_modalities`: image -> schema modalities).

    Raises InputError naming the config key when a modality is not one of the schema's."""
    known = sorted({b.modality for b in schema.biomarkers.values()})
    keys: dict[str, frozenset[str]] = {}
    for image, modalities in (image_modalities or {}).items():
        modalities = [modalities] if isinstance(modalities, str) else list(modalities)
        unknown = sorted(set(modalities) - set(known))
        if unknown:
            raise InputError(
                f"config key 'image_modalities.{image}': unknown schema modality {unknown}; expected some of {known}"
            )
        keys[str(image)] = frozenset(b.name for b in schema.by_modality(*modalities))
    return keys


def absent_image_quotes(
    quotes: Sequence[QuotedValue],
    images_absent: Sequence[str],
    image_keys: Mapping[str, frozenset[str]],
    units: Mapping[str, str | None] | None = None,
) -> list[dict[str, Any]]:
    """The quotes whose quantity belongs to an absent image, each with that image. With `units` (key -> the schema's
    unit), a number written with a unit that is not its quantity's nor convertible to it is not counted ('82 mmHg'
    beside a thickness's name in a garbled line is the blood pressure, not the thickness)."""
    unknown = sorted(set(images_absent) - set(image_keys))
    if unknown:
        raise ValueError(f"images_absent {unknown}: no such image in image_modalities {sorted(image_keys)}")
    owner = {key: image for image in images_absent for key in image_keys[image]}
    return [
        {"image": owner[q.biomarker], "biomarker": q.biomarker, "value": q.value, "unit": q.unit}
        for q in quotes
        if q.biomarker in owner and _unit_fits(q, (units or {}).get(q.biomarker))
    ]


def _unit_fits(quote: QuotedValue, unit: str | None) -> bool:
    """Whether `quote` may be a value of a quantity in `unit` (no unit written, or the same or a convertible one)."""
    if not quote.unit or not unit:
        return True
    written, expected = canonical_unit(quote.unit) or quote.unit, canonical_unit(unit) or unit
    return written == expected or convert(1.0, written, expected) is not None


def summarise_absent(records: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """Over the per-report records that carry `images_absent`: reports written without an image, quantities stated
    for an absent image in total, reports stating at least one, and the same per absent image; None without any."""
    absent = [r for r in records if r.get("images_absent")]
    if not absent:
        return None

    def counts(rows: Sequence[Mapping[str, Any]], image: str | None = None) -> dict[str, int]:
        stated = [[q for q in r["absent_image_quotes"] if image is None or q["image"] == image] for r in rows]
        return {
            "reports": len(rows),
            "quantities_stated": sum(len(s) for s in stated),
            "reports_stating": sum(bool(s) for s in stated),
        }

    images = sorted({image for r in absent for image in r["images_absent"]})
    by_image = {image: counts([r for r in absent if image in r["images_absent"]], image) for image in images}
    return {**counts(absent), "by_image": by_image}
