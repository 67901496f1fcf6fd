"""Disease-conditional sampling of SynthEye subjects: labels, demographics, systemic values and per-eye biomarkers.

Every eye is drawn as a small latent anatomy (layer thicknesses at the fovea and the two ETDRS rings, lesion
counts, vessel and disc parameters); the table's columns are computed from it, and the renderers draw from it, so
the images show exactly the numbers in the table.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from grok.data.synth.anatomy import ETDRS_QUADRANTS, central_subfield_mean, etdrs_area_weights
from grok.schema import load_schema
from grok.schema.schema import Schema
from grok.utils.errors import InputError

RING_KEYS = ("fovea", "inner", "outer")
LAYERS = ("rnfl", "gcipl", "inl", "onl_opl", "elm_isos", "isos_rpe", "rpe", "choroid")
EYES = ("R", "L")
# Spawn keys of the independent random streams derived from the dataset seed.
LABEL_STREAM, SUBJECT_STREAM = 0, 1


class ProfileError(InputError):
    """A sampling-profile file is malformed; the message names the file and key."""


@lru_cache(maxsize=4)
def load_profiles(path: str | None = None) -> dict[str, Any]:
    """The disease sampling profiles: the package's `profiles.yaml`, or a user file given by path."""
    source = Path(path) if path else Path(str(resources.files("grok.data.synth").joinpath("profiles.yaml")))
    with open(source, encoding="utf-8") as handle:
        profiles = yaml.safe_load(handle)
    schema = load_schema()
    for key in ("age", "severity", "layers", "quantities", "lesions", "labels"):
        if key not in profiles:
            raise ProfileError(f"{source}: missing top-level key '{key}'")
    unknown = sorted(set(profiles["labels"]) - set(schema.label_names))
    if unknown:
        raise ProfileError(f"{source}: labels {unknown} are not schema labels {schema.label_names}")
    for label, spec in profiles["labels"].items():
        for name in (spec or {}).get("quantities", {}):
            if name not in profiles["quantities"]:
                raise ProfileError(f"{source}: labels.{label}.quantities.{name} is not declared under 'quantities'")
        for name in (spec or {}).get("layers", {}):
            if name not in LAYERS:
                raise ProfileError(f"{source}: labels.{label}.layers.{name}: expected one of {list(LAYERS)}")
    profiles["_source"] = str(source)
    return profiles


@dataclass
class EyeAnatomy:
    """Everything the renderers need for one eye (complete: no missing values)."""

    eye: str
    severity: float
    layers: dict[str, np.ndarray]  # layer -> (fovea, inner, outer) thickness in um
    rnfl_quadrant_offsets: dict[str, tuple[float, float]]  # quadrant -> (inner, outer) um added to the RNFL
    biomarkers: dict[str, Any]  # every schema biomarker column
    rpe_irregularity_um: float = 0.0
    drusen_heights_um: list[float] = field(default_factory=list)
    cyst_count: int = 0


@dataclass
class Subject:
    """One SynthEye subject: labels, demographics and both eyes."""

    index: int
    subject_id: str
    labels: list[str]
    eyes: dict[str, EyeAnatomy]


def subject_rng(seed: int, index: int) -> np.random.Generator:
    """The random stream of subject `index`: independent of every other subject, so generation parallelises."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(SUBJECT_STREAM, index)))


def assign_labels(
    n_subjects: int,
    seed: int,
    class_weights: Mapping[str, float],
    multilabel_fraction: float,
    combinations: Sequence[Sequence[str]],
) -> list[list[str]]:
    """Label sets for every subject: primary labels in proportion to `class_weights` (exact quotas, shuffled),
    and a `multilabel_fraction` of subjects given one of the `combinations` that contains their primary label."""
    names = list(class_weights)
    weights = np.array([float(class_weights[name]) for name in names])
    if (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(f"class_weights must be non-negative with a positive sum, got {dict(class_weights)}")
    if not 0.0 <= multilabel_fraction <= 1.0:
        raise ValueError(f"multilabel_fraction must lie in [0, 1], got {multilabel_fraction}")
    expected = weights / weights.sum() * n_subjects
    counts = np.floor(expected).astype(int)
    for position in np.argsort(-(expected - counts), kind="stable")[: n_subjects - counts.sum()]:
        counts[position] += 1
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(LABEL_STREAM,)))
    primary = rng.permutation(np.repeat(np.arange(len(names)), counts))
    label_sets = [[names[k]] for k in primary]
    n_multi = round(multilabel_fraction * n_subjects)
    for index in rng.permutation(n_subjects)[:n_multi]:
        options = [list(c) for c in combinations if label_sets[index][0] in c]
        if options:
            chosen = options[rng.integers(len(options))]
            label_sets[index] = [label_sets[index][0]] + [name for name in chosen if name != label_sets[index][0]]
    return label_sets


def _draw(spec: Mapping[str, float], z: float) -> float:
    return float(np.clip(spec["mean"] + spec["sd"] * z, spec["low"], spec["high"]))


def _most_abnormal(profiles: Mapping[str, Any], labels: Sequence[str], name: str) -> Mapping[str, float]:
    """The distribution of quantity `name` under these labels: the one whose mean lies furthest from Normal's."""
    normal = profiles["quantities"][name]
    chosen, distance = normal, 0.0
    for label in labels:
        spec = (profiles["labels"].get(label) or {}).get("quantities", {}).get(name)
        if spec is not None and abs(spec["mean"] - normal["mean"]) / normal["sd"] > distance:
            chosen, distance = spec, abs(spec["mean"] - normal["mean"]) / normal["sd"]
    return chosen


def _combined_effect(values: Sequence[float], neutral: float) -> float:
    """Several labels' effects on one quantity: the strongest increase plus the strongest decrease."""
    ups = [v - neutral for v in values if v > neutral]
    downs = [v - neutral for v in values if v < neutral]
    return neutral + (max(ups) if ups else 0.0) + (min(downs) if downs else 0.0)


def _label_specs(profiles: Mapping[str, Any], labels: Sequence[str]) -> list[Mapping[str, Any]]:
    return [profiles["labels"].get(label) or {} for label in labels]


def _layer_factors(specs: Sequence[Mapping[str, Any]], layer: str, severity: float) -> np.ndarray:
    """Multiplicative (fovea, inner, outer) factors on `layer` at this severity."""
    factors = []
    for ring in RING_KEYS:
        values = []
        for spec in specs:
            effect = spec.get("layers", {}).get(layer, {})
            full = effect.get(ring, effect.get("all", 1.0))
            values.append(1.0 + (full - 1.0) * severity)
        factors.append(_combined_effect(values, 1.0))
    return np.array(factors)


def _thickening(specs: Sequence[Mapping[str, Any]], severity: float) -> np.ndarray:
    return np.array(
        [
            _combined_effect([spec.get("thickening_um", {}).get(ring, 0.0) * severity for spec in specs], 0.0)
            for ring in RING_KEYS
        ]
    )


def _eye_layers(
    profiles: Mapping[str, Any],
    specs: Sequence[Mapping[str, Any]],
    severity: float,
    age: float,
    sex: str,
    z_subject: np.ndarray,
    z_eye: np.ndarray,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    cfg = profiles["layers"]
    r = profiles["subject_eye_correlation"]
    age_delta = age - profiles["age"]["reference"]
    common = 1.0 + cfg["common_sd"] * rng.standard_normal()
    layers = {}
    for k, layer in enumerate(LAYERS):
        spec = cfg[layer]
        base = np.array([spec[ring] for ring in RING_KEYS], dtype=np.float64)
        base = base + spec["age_slope"] * age_delta
        if sex == "M":
            base[:2] += spec["male_offset"]
        z = r * z_subject[k] + math.sqrt(1 - r * r) * z_eye[k]
        thickness = base * common * (1.0 + spec["sd"] * z) * _layer_factors(specs, layer, severity)
        if layer == "onl_opl":
            thickness = thickness + _thickening(specs, severity)
        layers[layer] = np.maximum(thickness, 1.0)
    return layers


def oct_columns(
    layers: Mapping[str, np.ndarray], rnfl_offsets: Mapping[str, tuple[float, float]], pit_sigma_mm: float
) -> dict[str, float]:
    """The 31 OCT table columns computed from an eye's latent layer thicknesses."""
    weights = etdrs_area_weights()

    def zones(values: np.ndarray) -> np.ndarray:  # (central-subfield mean, inner ring, outer ring)
        return np.array([central_subfield_mean(values, pit_sigma_mm), values[1], values[2]])

    z = {name: zones(values) for name, values in layers.items()}
    inl_elm = z["inl"] + z["onl_opl"]
    bands = {"inl_elm": inl_elm, "elm_isos": z["elm_isos"], "isos_rpe": z["isos_rpe"]}
    bands["inl_rpe"] = inl_elm + z["elm_isos"] + z["isos_rpe"]
    total = z["rnfl"] + z["gcipl"] + bands["inl_rpe"] + z["rpe"]
    columns: dict[str, float] = {"macula_central_um": total[0]}
    for quadrant in ETDRS_QUADRANTS:
        inner_offset, outer_offset = rnfl_offsets[quadrant]
        columns[f"macula_inner_{quadrant}_um"] = total[1] + inner_offset
        columns[f"macula_outer_{quadrant}_um"] = total[2] + outer_offset
    columns["macula_overall_um"] = float(weights @ total)
    for name, column in (
        ("rpe", "rpe_avg_um"),
        ("inl", "inl_avg_um"),
        ("gcipl", "gcipl_avg_um"),
        ("rnfl", "rnfl_avg_um"),
    ):
        columns[column] = float(weights @ z[name])
    for band, values in bands.items():
        for zone, value in zip(("central", "inner", "outer"), values, strict=True):
            columns[f"{band}_{zone}_um"] = value
        columns[f"{band}_avg_um"] = float(weights @ values)
    return {name: float(value) for name, value in columns.items()}


def _rnfl_offsets(profiles: Mapping[str, Any], rng: np.random.Generator) -> dict[str, tuple[float, float]]:
    cfg = profiles["layers"]["quadrant_offset"]
    sd = profiles["layers"]["quadrant_offset_sd"]
    rings = {}
    for ring in ("inner", "outer"):
        values = np.array([cfg[ring][q] for q in ETDRS_QUADRANTS]) + sd * rng.standard_normal(len(ETDRS_QUADRANTS))
        rings[ring] = values - values.mean()
    return {q: (float(rings["inner"][k]), float(rings["outer"][k])) for k, q in enumerate(ETDRS_QUADRANTS)}


def round_biomarkers(values: Mapping[str, Any], schema: Schema) -> dict[str, Any]:
    """Round to the precision a device reports: 0.1 um, 0.001 for ratios, 0.1 for systemic values; clip to range."""
    rounded: dict[str, Any] = {}
    for name, value in values.items():
        biomarker = schema.biomarkers[name]
        if biomarker.dtype == "category":
            rounded[name] = value
            continue
        low, high = biomarker.valid_range or (-math.inf, math.inf)
        value = float(np.clip(value, low, high))
        if biomarker.dtype == "int":
            rounded[name] = round(value)
        else:
            rounded[name] = round(value, 3 if biomarker.unit == "1" else 1)
    return rounded


def sample_subject(
    index: int, labels: Sequence[str], seed: int, profiles: Mapping[str, Any], schema: Schema
) -> Subject:
    """Draw subject `index` with these labels from its own random stream (deterministic for (seed, index))."""
    rng = subject_rng(seed, index)
    specs = _label_specs(profiles, labels)
    ages = profiles["age"]
    a, b = max(((spec.get("age_beta") or [1.0, 1.0]) for spec in specs), key=lambda ab: ab[0] / (ab[0] + ab[1]))
    age = float(np.floor(ages["min"] + (ages["max"] + 1 - ages["min"]) * rng.beta(a, b)))
    age = min(age, float(ages["max"]))
    sex = "M" if rng.random() < profiles["male_fraction"] else "F"
    diseased = any(label != schema.normal_label for label in labels)
    severity = float(rng.uniform(profiles["severity"]["min"], profiles["severity"]["max"])) if diseased else 0.0
    quantity_names = list(profiles["quantities"])
    z_subject = {name: rng.standard_normal() for name in quantity_names}
    z_layers_subject = rng.standard_normal(len(LAYERS))
    r = profiles["subject_eye_correlation"]
    systemic = {
        name: _draw(_most_abnormal(profiles, labels, name), z_subject[name])
        for name in quantity_names
        if not profiles["quantities"][name]["eye_level"]
    }
    eyes: dict[str, EyeAnatomy] = {}
    for eye in EYES:
        eye_severity = float(np.clip(severity + profiles["severity_eye_sd"] * rng.standard_normal(), 0.2, 1.0))
        eye_severity = eye_severity if diseased else 0.0
        layers = _eye_layers(
            profiles, specs, eye_severity, age, sex, z_layers_subject, rng.standard_normal(len(LAYERS)), rng
        )
        offsets = _rnfl_offsets(profiles, rng)
        values: dict[str, Any] = oct_columns(layers, offsets, profiles["layers"]["pit_sigma_mm"])
        for name in quantity_names:
            if profiles["quantities"][name]["eye_level"]:
                z = r * z_subject[name] + math.sqrt(1 - r * r) * rng.standard_normal()
                values[name] = _draw(_most_abnormal(profiles, labels, name), z)
        values.update(systemic)
        values["age_years"] = age
        values["sex"] = sex
        for name, spec in profiles["lesions"].items():
            mean = _combined_effect([s.get("lesions", {}).get(name, spec["mean"]) for s in specs], 0.0)
            values[name] = int(min(rng.poisson(mean * max(eye_severity, 0.0)), spec["max"]))
        eyes[eye] = _eye_extras(
            EyeAnatomy(eye, eye_severity, layers, offsets, round_biomarkers(values, schema)), specs, rng
        )
    missing = set(schema.biomarkers) - set(eyes["R"].biomarkers)
    if missing:
        raise ProfileError(f"{profiles['_source']}: no sampling rule for schema columns {sorted(missing)}")
    return Subject(index, f"S{index:06d}", list(labels), eyes)


def _eye_extras(eye: EyeAnatomy, specs: Sequence[Mapping[str, Any]], rng: np.random.Generator) -> EyeAnatomy:
    """Lesion geometry the table does not hold: RPE waviness, drusen heights, intraretinal cysts."""
    eye.rpe_irregularity_um = _combined_effect([s.get("rpe_irregularity_um", 0.0) for s in specs], 0.0) * eye.severity
    heights = [s["drusen_height_um"] for s in specs if "drusen_height_um" in s]
    n_drusen = eye.biomarkers.get("drusen_count", 0)
    if heights and n_drusen:
        low, high = heights[0]
        n_on_scan = min(math.ceil(n_drusen / 5), 6)
        eye.drusen_heights_um = [float(h) for h in rng.uniform(low, high, n_on_scan) * (0.5 + 0.5 * eye.severity)]
    cysts = [s["cysts"] for s in specs if "cysts" in s]
    if cysts:
        eye.cyst_count = round(rng.integers(cysts[0][0], cysts[0][1] + 1) * eye.severity)
    return eye
