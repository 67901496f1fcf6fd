"""The `grounding/` config group as typed settings, and the objects every stage builds from it the same way."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grok.grounding.symbols import QuantityTokens
from grok.knowledge.base import KnowledgeBase
from grok.knowledge.manifest import resolve_knowledge_base
from grok.knowledge.parser import load_knowledge_base, shipped_version

QUALITATIVE = ("language_model", "finding_readout")  # who decides the findings a report states (conf/grounding)


@dataclass(frozen=True)
class GroundingSettings:
    """What `conf/grounding/<option>.yaml` says (see that file for each key)."""

    enabled: bool = True
    source: str = "auto"
    knowledge_base: Mapping[str, Any] = field(default_factory=dict)
    image_modalities: Mapping[str, Any] = field(default_factory=lambda: {"oct": ["oct"], "cfp": ["cfp", "lesion"]})
    value_hidden_dim: int = 64
    readout_hidden_dim: int = 64
    readout_loss_weight: float = 1.0
    judgement_weight: float = 1.0
    judgement_window: int = 4
    judgement_vocabulary: bool = False
    value_context: bool = False
    context_hidden_dim: int = 128
    judgement_head: bool = False
    judgement_loss_weight: float = 1.0
    carry_window: int = 0
    readout: str = "attention"
    ridge_alphas: tuple[float, ...] = tuple(10.0 ** (k / 2) for k in range(-2, 11))
    qualitative: str = "language_model"
    finding_readout_cs: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0)
    finding_readout_folds: int = 5
    finding_readout_cv: int = 4
    finding_readout_select: bool = True
    finding_readout_modality_dropout: bool = False
    preamble: bool = True
    estimate_marker: str = "≈"
    forbid_digits: bool = True
    match_tolerance: float = 0.02

    @classmethod
    def from_config(cls, node: Mapping[str, Any] | None) -> GroundingSettings | None:
        """Settings of an enabled grounding node; None for `grounding=none` (or no node: free digits)."""
        if not node or not node.get("enabled", False):
            return None
        known = set(cls.__dataclass_fields__)
        unknown = set(node) - known
        if unknown:
            raise ValueError(f"grounding: unknown key(s) {sorted(unknown)}; expected {sorted(known)}")
        settings = cls(**dict(node))
        if settings.qualitative not in QUALITATIVE:
            raise ValueError(f"grounding.qualitative={settings.qualitative!r} is not one of {list(QUALITATIVE)}")
        return settings


def knowledge_base_of(settings: GroundingSettings) -> KnowledgeBase:
    """The knowledge base named by `grounding.knowledge_base` ({version, path}; the latest when neither is set)."""
    spec = dict(settings.knowledge_base or {})
    return load_knowledge_base(spec.get("version"), path=spec.get("path"))


def quantity_tokens_of(settings: GroundingSettings, kb: KnowledgeBase | None = None) -> QuantityTokens:
    """The quantity tokens of the settings' knowledge base and image modalities."""
    return QuantityTokens.from_knowledge_base(kb or knowledge_base_of(settings), settings.image_modalities)


def token_strings(grounding: Mapping[str, Any] | None) -> list[str]:
    """The special tokens grounding adds to the tokenizer (none for `grounding=none`); used by conf/mllm.yaml."""
    settings = GroundingSettings.from_config(grounding)
    return [] if settings is None else quantity_tokens_of(settings).tokens


def pin_knowledge_base(grounding: Any, instructions_dir: str | Path) -> None:
    """Fill an unset `grounding.knowledge_base` (in place) with the knowledge base stage one wrote
    `instructions_dir` with (its manifest), so the tokens, the training and every later stage share one."""
    spec = grounding.get("knowledge_base") if grounding is not None and grounding.get("enabled") else None
    if spec is None:
        return
    kb = resolve_knowledge_base(
        spec.get("version"), spec.get("path"), instructions_dir, config_key="grounding.knowledge_base"
    )
    version = shipped_version(kb.path)
    spec["version"], spec["path"] = version, None if version else kb.path


def judgement_phrases(kb: KnowledgeBase) -> list[str]:
    """The words a report judges values with, from the knowledge base: finding names and phrases, diagnosis names
    and synonyms, severity levels, and the writer's status phrases ("within normal limits", "elevated", ...)."""
    from grok.knowledge.phrasing import load_phrasebook

    phrases = [f.display for f in kb.findings.values()] + [p for f in kb.findings.values() for p in f.phrases]
    phrases += [label.display for label in kb.schema.labels] + [s for label in kb.schema.labels for s in label.synonyms]
    phrases += list(kb.severity_levels)
    book = load_phrasebook()
    phrases += [v for status in ("high", "low", "normal") for v in book.variants(f"status.{status}")]
    return sorted(set(phrases))
