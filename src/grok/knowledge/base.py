"""The knowledge base as data: findings, diagnosis rules and reference overrides, bound to the schema.

`grok.knowledge.parser` reads and validates the YAML into these classes; `grok.knowledge.engine` evaluates them.
"""

from __future__ import annotations

from dataclasses import dataclass

from grok.schema.schema import ReferenceRange, Schema
from grok.utils.errors import InputError

OPERATORS = ("above", "below", "at_least", "at_most")
FINDING_KINDS = ("retinal", "systemic")
SYSTEMIC_COLUMNS = ("age_years", "sex", "sbp_mmhg", "dbp_mmhg", "hba1c_mmol_mol", "bmi_kg_m2")


class KnowledgeBaseError(InputError):
    """The knowledge base file is invalid; the message names the file and the key at fault."""


@dataclass(frozen=True)
class Condition:
    """One comparison of a biomarker with a number or with the person's reference range."""

    biomarker: str
    operator: str  # one of OPERATORS
    threshold: float | None  # None: the reference range's bound (high for above/at_least, low for below/at_most)
    grades: tuple[tuple[str, float], ...] = ()  # (severity, distance past the threshold), ascending

    @property
    def uses_reference(self) -> bool:
        """Whether the threshold is a bound of the reference range."""
        return self.threshold is None

    @property
    def upward(self) -> bool:
        """Whether the condition fires on high values."""
        return self.operator in ("above", "at_least")


@dataclass(frozen=True)
class FindingRule:
    """A qualitative finding and the conditions that trigger it."""

    id: str
    display: str
    phrases: tuple[str, ...]
    kind: str  # one of FINDING_KINDS
    conditions: tuple[Condition, ...]
    require_all: bool
    source: str
    superseded_by: tuple[str, ...] = ()  # not reported when one of these (more specific) findings is present

    @property
    def biomarkers(self) -> tuple[str, ...]:
        """Biomarkers this finding looks at, in rule order."""
        return tuple(dict.fromkeys(c.biomarker for c in self.conditions))


@dataclass(frozen=True)
class DiagnosisRule:
    """How findings (and systemic values) lead to one schema label."""

    label: str
    all_of: tuple[str, ...]
    any_of: tuple[str, ...]
    none_of: tuple[str, ...]
    also_supported_by: tuple[str, ...]
    systemic: tuple[Condition, ...]
    superseded_by: tuple[str, ...]
    source: str

    @property
    def related_findings(self) -> tuple[str, ...]:
        """Every finding that can support this label."""
        return tuple(dict.fromkeys((*self.all_of, *self.any_of, *self.also_supported_by)))


@dataclass(frozen=True, eq=False)  # identity hash: engines cache compiled views per KB object
class KnowledgeBase:
    """A validated knowledge base bound to the schema it was checked against."""

    version: int
    name: str
    path: str
    schema: Schema
    findings: dict[str, FindingRule]
    diagnoses: tuple[DiagnosisRule, ...]
    core_biomarkers: tuple[str, ...]
    max_extra_abnormal: int
    reference_overrides: dict[str, ReferenceRange]
    severity_levels: tuple[str, ...]
    decimals: dict[str, int]
    unit_display: dict[str, str]

    def reference(self, name: str) -> ReferenceRange | None:
        """The reference range of `name` in this KB: its override if any, else the schema's."""
        override = self.reference_overrides.get(name)
        return override if override is not None else self.schema.biomarkers[name].reference

    def reference_range(
        self, name: str, age: float | None = None, sex: str | None = None
    ) -> tuple[float, float] | None:
        """The (low, high) normal range of `name` for this person under this KB."""
        reference = self.reference(name)
        return None if reference is None else reference.for_person(age, sex)

    def rules_for(self, label: str) -> list[DiagnosisRule]:
        """The rules that lead to `label`, in file order (empty for the normal label)."""
        return [rule for rule in self.diagnoses if rule.label == label]

    def decimals_of(self, name: str) -> int:
        """Decimals used when writing a value of biomarker `name`."""
        return self.decimals.get(name, self.decimals.get(f"unit:{self.schema.biomarkers[name].unit}", 2))
