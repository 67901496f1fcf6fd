"""Typed view of the biomarker and label schema shipped as YAML inside the package."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from grok.utils.errors import InputError

PACKAGE_BIOMARKERS = "biomarkers.yaml"
PACKAGE_LABELS = "labels.yaml"


class SchemaError(InputError):
    """A schema file is malformed; the message names the file and the key at fault."""


@dataclass(frozen=True)
class ReferenceStratum:
    """An override of the reference range for a sex and/or an age band [min, max)."""

    low: float
    high: float
    sex: str | None = None
    age: tuple[float, float] | None = None

    def matches(self, age: float | None, sex: str | None) -> bool:
        """Whether this stratum applies to a person of this age and sex (unknown values never match)."""
        if self.sex is not None and sex != self.sex:
            return False
        if self.age is not None:
            if age is None or (isinstance(age, float) and math.isnan(age)):
                return False
            if not (self.age[0] <= age < self.age[1]):
                return False
        return True


@dataclass(frozen=True)
class ReferenceRange:
    """Normal range of a biomarker, optionally age/sex dependent."""

    low: float
    high: float
    strata: tuple[ReferenceStratum, ...] = ()

    def for_person(self, age: float | None = None, sex: str | None = None) -> tuple[float, float]:
        """The (low, high) range that applies to this person: the last matching stratum wins."""
        low, high = self.low, self.high
        for stratum in self.strata:
            if stratum.matches(age, sex):
                low, high = stratum.low, stratum.high
        return low, high


@dataclass(frozen=True)
class Biomarker:
    """One column of the biomarker table."""

    name: str
    display: str
    unit: str | None
    modality: str
    dtype: str
    nullable: bool = True
    optional: bool = False
    valid_range: tuple[float, float] | None = None
    reference: ReferenceRange | None = None
    categories: tuple[str, ...] = ()
    abbreviation: str | None = None
    source: str = ""
    ukb_field: Any = None
    aliases: tuple[str, ...] = ()
    phrases: tuple[str, ...] = ()  # other ways reports name it ("retinal nerve fibre layer"), for text parsers

    @property
    def label(self) -> str:
        """Display name with its abbreviation, e.g. 'central subfield macular thickness (CST)'."""
        return f"{self.display} ({self.abbreviation})" if self.abbreviation else self.display


@dataclass(frozen=True)
class Label:
    """One diagnostic label of the benchmark."""

    name: str
    display: str
    synonyms: tuple[str, ...]
    normal: bool = False


@dataclass(frozen=True)
class Schema:
    """The biomarker table's columns and the diagnostic labels."""

    version: int
    biomarkers: dict[str, Biomarker]
    labels: tuple[Label, ...]
    identifiers: dict[str, dict[str, Any]] = field(default_factory=dict)
    image_columns: tuple[str, ...] = ("oct_path", "cfp_path")
    label_column: str = "labels"
    source_files: tuple[str, ...] = ()

    @property
    def label_names(self) -> list[str]:
        """Label names in schema order (the class index order everywhere in GROK)."""
        return [label.name for label in self.labels]

    @property
    def normal_label(self) -> str:
        """Name of the label that means 'no disease'."""
        return next(label.name for label in self.labels if label.normal)

    def by_modality(self, *modalities: str) -> list[Biomarker]:
        """Biomarkers of the given modalities, in schema order."""
        return [b for b in self.biomarkers.values() if b.modality in modalities]

    @property
    def oct_biomarkers(self) -> list[str]:
        """Names of the OCT measures (31 in the UK Biobank schema)."""
        return [b.name for b in self.by_modality("oct")]

    @property
    def cfp_biomarkers(self) -> list[str]:
        """Names of the CFP measures."""
        return [b.name for b in self.by_modality("cfp")]

    def reference_range(
        self, name: str, age: float | None = None, sex: str | None = None
    ) -> tuple[float, float] | None:
        """Normal (low, high) of biomarker `name` for this person, or None when the schema gives none."""
        reference = self.biomarkers[name].reference
        return None if reference is None else reference.for_person(age, sex)


def _as_range(value: Any, where: str) -> tuple[float, float] | None:
    if value is None:
        return None
    if not (isinstance(value, (list, tuple)) and len(value) == 2):
        raise SchemaError(f"{where}: expected [min, max], got {value!r}")
    return float(value[0]), float(value[1])


def _parse_reference(raw: Any, where: str) -> ReferenceRange | None:
    if raw is None:
        return None
    try:
        strata = tuple(
            ReferenceStratum(
                low=float(s["low"]),
                high=float(s["high"]),
                sex=s.get("sex"),
                age=_as_range(s.get("age"), f"{where}.strata.age"),
            )
            for s in raw.get("strata", []) or []
        )
        return ReferenceRange(low=float(raw["low"]), high=float(raw["high"]), strata=strata)
    except (KeyError, TypeError) as error:
        raise SchemaError(f"{where}: reference needs low and high ({error!r})") from error


def parse_biomarkers(raw: dict[str, Any], source: str) -> dict[str, Biomarker]:
    """Turn the `biomarkers:` mapping of a schema file into Biomarker objects."""
    biomarkers: dict[str, Biomarker] = {}
    for name, spec in raw.items():
        where = f"{source}: biomarkers.{name}"
        for key in ("display", "modality", "dtype"):
            if key not in spec:
                raise SchemaError(f"{where}: missing required key '{key}'")
        if spec["dtype"] not in ("float", "int", "category"):
            raise SchemaError(f"{where}.dtype: expected float, int or category, got {spec['dtype']!r}")
        biomarkers[name] = Biomarker(
            name=name,
            display=spec["display"],
            unit=spec.get("unit"),
            modality=spec["modality"],
            dtype=spec["dtype"],
            nullable=bool(spec.get("nullable", True)),
            optional=bool(spec.get("optional", False)),
            valid_range=_as_range(spec.get("valid_range"), f"{where}.valid_range"),
            reference=_parse_reference(spec.get("reference"), where),
            categories=tuple(spec.get("categories", ()) or ()),
            abbreviation=spec.get("abbreviation"),
            source=spec.get("source", ""),
            ukb_field=spec.get("ukb_field"),
            aliases=tuple(spec.get("aliases", ()) or ()),
            phrases=tuple(spec.get("phrases", ()) or ()),
        )
    return biomarkers


def _read_yaml(path: Path | str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except yaml.YAMLError as error:
        raise SchemaError(f"{path}: not valid YAML ({error})") from error
    if not isinstance(data, dict):
        raise SchemaError(f"{path}: expected a mapping at the top level")
    return data


def _package_file(name: str) -> Path:
    return Path(str(resources.files("grok.schema").joinpath(name)))


@lru_cache(maxsize=8)
def load_schema(biomarkers_path: str | None = None, labels_path: str | None = None) -> Schema:
    """Load the schema: the package's YAML files by default, or user replacements given by path."""
    biomarker_file = Path(biomarkers_path) if biomarkers_path else _package_file(PACKAGE_BIOMARKERS)
    label_file = Path(labels_path) if labels_path else _package_file(PACKAGE_LABELS)
    raw = _read_yaml(biomarker_file)
    raw_labels = _read_yaml(label_file)
    if "biomarkers" not in raw:
        raise SchemaError(f"{biomarker_file}: missing top-level key 'biomarkers'")
    labels = []
    for index, spec in enumerate(raw_labels.get("labels", [])):
        if "name" not in spec:
            raise SchemaError(f"{label_file}: labels[{index}] has no 'name'")
        labels.append(
            Label(
                name=spec["name"],
                display=spec.get("display", spec["name"]),
                synonyms=tuple(spec.get("synonyms", [spec["name"]])),
                normal=bool(spec.get("normal", False)),
            )
        )
    if sum(label.normal for label in labels) != 1:
        raise SchemaError(f"{label_file}: exactly one label must have 'normal: true'")
    return Schema(
        version=int(raw.get("version", 1)),
        biomarkers=parse_biomarkers(raw["biomarkers"], str(biomarker_file)),
        labels=tuple(labels),
        identifiers=raw.get("identifiers", {}),
        image_columns=tuple(raw.get("image_columns", ("oct_path", "cfp_path"))),
        label_column=raw.get("label_column", "labels"),
        source_files=(str(biomarker_file), str(label_file)),
    )


def parse_labels(value: Any, schema: Schema | None = None) -> list[str]:
    """Split a table's label cell (';'-separated string or list) into label names, validating them."""
    schema = schema or load_schema()
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    items = value.split(";") if isinstance(value, str) else list(value)
    names = [str(item).strip() for item in items if str(item).strip()]
    unknown = [name for name in names if name not in schema.label_names]
    if unknown:
        raise SchemaError(f"unknown label(s) {unknown}; expected one of {schema.label_names}")
    return names
