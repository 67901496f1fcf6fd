"""Unit conversions the schema understands: used to spot tables (and reports) in another unit than declared."""

from __future__ import annotations

from collections.abc import Callable

# declared unit -> {other unit: function converting a value in the other unit to the declared unit}
UNIT_ALTERNATIVES: dict[str, dict[str, Callable[[float], float]]] = {
    "um": {"mm": lambda value: value * 1000.0, "nm": lambda value: value / 1000.0},
    "mmol/mol": {"%": lambda value: (value - 2.15) * 10.929},  # IFCC from NGSP/DCCT (IFCC-NGSP master equation)
    "mmHg": {"kPa": lambda value: value * 7.50062},
}

UNIT_SPELLINGS: dict[str, str] = {
    "um": "um", "µm": "um", "μm": "um", "micron": "um", "microns": "um", "micrometre": "um", "micrometres": "um",
    "micrometer": "um", "micrometers": "um", "mm": "mm", "millimetre": "mm", "millimetres": "mm", "millimeter": "mm",
    "millimeters": "mm", "nm": "nm", "mmol/mol": "mmol/mol", "%": "%", "percent": "%", "mmhg": "mmHg",
    "mm hg": "mmHg", "kpa": "kPa", "kg/m2": "kg/m2", "kg/m²": "kg/m2", "years": "years", "count": "count",
}  # fmt: skip


def canonical_unit(text: str) -> str | None:
    """The canonical spelling of a unit written in prose or a column suffix, or None when unknown."""
    return UNIT_SPELLINGS.get(text.strip().lower())


def convert(value: float, from_unit: str, to_unit: str) -> float | None:
    """`value` in `from_unit` expressed in `to_unit`, or None when no conversion is known."""
    if from_unit == to_unit:
        return value
    converter = UNIT_ALTERNATIVES.get(to_unit, {}).get(from_unit)
    return None if converter is None else converter(value)
