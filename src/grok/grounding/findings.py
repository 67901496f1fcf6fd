"""The finding read-out: which knowledge-base findings an eye shows, decided from its values in force.

Thresholding the read-out's estimates through the rules (`grok-rules` before this module) calls a finding wherever an
estimate lands on the wrong side of a threshold: a drusen count estimated at 1 passes "count > 0" in most eyes, and
vessel calibres that are off by a few micrometres miss most vessel findings (experiments/mllm/README.md, "Where the
diagnoses fail": 0.418 macro-F1, where one logistic regression per finding on the same estimates reaches 0.804).

- `FindingReadout` holds one logistic regression per finding over the standardised values in force, fitted once
  before training (scikit-learn's `LogisticRegressionCV`, not trained beside the LM; like the ridge read-out) on the
  training eyes' out-of-fold read-out estimates and stated values, with stage one's findings as targets, folds
  keeping a subject's eyes together; kept as buffers, so it is saved with the trainable weights and exported.
- `FindingDecider` decides each eye's findings: the classifier for a finding that rests on a read-out estimate (where
  it beat the rules in cross-validation), the knowledge base's rules otherwise and for one whose values are all
  stated (so a stated row is judged exactly as stage one judges it). Estimates whose side of a threshold implies a
  finding the decision rejects are withheld (never quoted as numbers), so no quoted number implies a finding the
  report does not state. The knowledge base then derives the diagnoses.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from grok.grounding.values import stated_values
from grok.knowledge.base import KnowledgeBase
from grok.knowledge.engine import (
    Assessment,
    Diagnosis,
    Finding,
    Quantity,
    diagnose_present,
    drop_superseded,
    evaluate_row,
    finding_from_values,
)

WITHHELD = "withheld"  # a quantity status: its estimate is not quoted (it disagrees with the decided findings)


class FindingReadout(nn.Module):
    """Logits [n, F] = standardised values in force [n, K] @ weight.T + bias; `fitted` marks the findings it decides
    (those whose classifier beat the rules in cross-validation on the training eyes: `cv_f1`, classifier vs rules)."""

    def __init__(self, num_quantities: int, num_findings: int) -> None:
        super().__init__()
        self.register_buffer("weight", torch.zeros(num_findings, num_quantities))
        self.register_buffer("bias", torch.zeros(num_findings))
        self.register_buffer("fitted", torch.zeros(num_findings, dtype=torch.bool))
        self.register_buffer("cv_f1", torch.full((num_findings, 2), math.nan))

    def forward(self, inputs: Tensor) -> Tensor:
        """[n, K] standardised values (0, the training mean, where unknown) -> [n, F] logits."""
        return inputs.to(self.weight.dtype) @ self.weight.T + self.bias

    @torch.no_grad()
    def fit(
        self,
        inputs: Tensor,
        targets: Tensor,
        cs: Sequence[float],
        folds: int = 4,
        rules: Tensor | None = None,
        candidates: Sequence[bool] | None = None,
        groups: Sequence[str] | None = None,
        min_cases: int = 3,
    ) -> int:
        """Fit on training eyes: `inputs` [n, K] standardised values, `targets` [n, F] 0/1 findings. With `rules`
        [n, F] (the rules' calls on the same inputs), a finding keeps the rules unless its classifier's out-of-fold F1
        is higher; one with fewer than `min_cases` positives or negatives always keeps them, as does one outside
        `candidates` (e.g. a systemic finding, whose values are always stated). `groups` (e.g. subject ids) keeps
        a group's eyes in one fold. Returns how many findings it decides."""
        import warnings

        from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
        from sklearn.metrics import f1_score
        from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict

        for buffer in (self.weight, self.bias):
            buffer.zero_()
        self.fitted.fill_(False)
        self.cv_f1.fill_(math.nan)
        x = inputs.double().numpy()
        mean, scale = x.mean(0), x.std(0)
        scale[scale < 1e-12] = 1.0
        standardised = (x - mean) / scale
        group_ids = list(groups) if groups is not None else list(range(len(x)))
        for column in range(targets.shape[1]):
            y = targets[:, column].numpy() > 0.5
            if candidates is not None and not candidates[column]:
                continue
            if min(y.sum(), (~y).sum()) < max(min_cases, folds):
                continue
            splits = list(StratifiedGroupKFold(folds, shuffle=True, random_state=0).split(standardised, y, group_ids))
            with warnings.catch_warnings():  # scikit-learn's announced changes of defaults: the defaults are meant
                warnings.simplefilter("ignore", FutureWarning)
                model = LogisticRegressionCV(Cs=list(cs), cv=splits, max_iter=3000).fit(standardised, y)  # L2, accuracy
            coef = np.ravel(model.coef_)
            self.weight[column] = torch.from_numpy(coef / scale)  # folded: ((x - mean) / scale) @ coef + b
            self.bias[column] = float(np.ravel(model.intercept_)[0] - (mean / scale) @ coef)
            chosen = LogisticRegression(C=float(np.ravel(model.C_)[0]), max_iter=3000)
            held_out = cross_val_predict(chosen, standardised, y, cv=splits)
            classifier = f1_score(y, held_out, zero_division=0.0)
            by_rules = math.nan if rules is None else f1_score(y, rules[:, column].numpy() > 0.5, zero_division=0.0)
            self.cv_f1[column] = torch.tensor([classifier, by_rules])
            self.fitted[column] = rules is None or classifier > by_rules
        return int(self.fitted.sum())


@dataclass(frozen=True)
class Decision:
    """One eye's decided findings and diagnoses (`assessment`, ready for the report writer) and the read-out
    estimates it does not quote (`withheld`)."""

    assessment: Assessment
    withheld: frozenset[str]


class FindingDecider:
    """Decides findings per eye from the rules and a fitted FindingReadout (see the module docstring)."""

    def __init__(self, kb: KnowledgeBase) -> None:
        self.kb = kb
        self.finding_ids = tuple(kb.findings)

    def rules_calls(self, rows: Sequence[Mapping[str, object]]) -> Tensor:
        """[n, F] 0/1: the findings the rules call on each row (what thresholding its values says)."""
        calls = torch.zeros(len(rows), len(self.finding_ids))
        for index, row in enumerate(rows):
            for finding_id in evaluate_row(row, self.kb).finding_ids:
                calls[index, self.finding_ids.index(finding_id)] = 1.0
        return calls

    def decide(
        self,
        row: Mapping[str, object],
        sources: Mapping[str, str],
        said: Mapping[str, bool],
    ) -> Decision:
        """`row` the values in force (with `sex`), `sources` each key's source (input / readout / missing), `said`
        the classifier's yes/no for each finding it decides."""
        kb = self.kb
        age, sex = row.get("age_years"), row.get("sex")
        fired = {
            rule.id: finding
            for rule in kb.findings.values()
            if (finding := finding_from_values(rule, row, kb, age, sex)) is not None
        }
        present = set()
        for finding_id, rule in kb.findings.items():
            estimated = any(sources.get(b) == "readout" for b in rule.biomarkers)
            if estimated and finding_id in said:
                if said[finding_id]:
                    present.add(finding_id)
            elif finding_id in fired:
                present.add(finding_id)
        present = drop_superseded(kb, present)
        withheld = self._withheld(row, sources, present)
        quoted = {k: v for k, v in row.items() if k not in withheld}
        engine = evaluate_row(quoted, kb)
        levels = kb.severity_levels
        findings = tuple(
            self._cited(fired[f], withheld) if f in fired else Finding(f, levels[0], ())
            for f in self.finding_ids
            if f in present
        )
        quantities = tuple(
            Quantity(q.name, None, q.unit, q.low, q.high, WITHHELD) if q.name in withheld else q
            for q in engine.quantities
        )
        systemic = engine.systemic
        diagnoses = tuple(Diagnosis(label, support) for label, support in diagnose_present(kb, present, systemic))
        return Decision(Assessment(quantities, findings, diagnoses, systemic), frozenset(withheld))

    def _withheld(self, row: Mapping[str, object], sources: Mapping[str, str], present: set[str]) -> set[str]:
        """The read-out estimates whose values would imply a finding outside `present` (withheld until none does)."""
        withheld: set[str] = set()
        for _ in range(len(row) + 1):
            quoted = {k: v for k, v in row.items() if k not in withheld}
            implied = evaluate_row(quoted, self.kb).findings
            extra = [f for f in implied if f.id not in present]
            culprits = {b for f in extra for b in f.biomarkers if sources.get(b) == "readout"}
            if not culprits:
                return withheld
            withheld |= culprits
        return withheld

    @staticmethod
    def _cited(finding: Finding, withheld: set[str]) -> Finding:
        return finding._replace(biomarkers=tuple(b for b in finding.biomarkers if b not in withheld))


def standardised_inputs(values: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """[B, K] values in force -> the finding read-out's inputs: z-scores, 0 where unknown."""
    return torch.nan_to_num((values.float() - mean) / std, nan=0.0)


def decided_assessments(
    decider: FindingDecider,
    readout: FindingReadout,
    keys: Sequence[str],
    values: Tensor,
    sources: Sequence[Sequence[str]],
    sexes: Sequence[str | None],
    mean: Tensor,
    std: Tensor,
) -> list[Decision]:
    """Per sample of a batch ([B, K] values in force, each key's source name, the person's sex): its Decision."""
    said_yes = (readout(standardised_inputs(values, mean, std)) > 0).tolist()
    fitted = readout.fitted.tolist()
    out = []
    for sample in range(values.shape[0]):
        row: dict[str, object] = {
            k: v for k, v in zip(keys, stated_values(values[sample].tolist()), strict=True) if not math.isnan(v)
        }
        row["sex"] = sexes[sample]
        said = {f: said_yes[sample][i] for i, f in enumerate(decider.finding_ids) if fitted[i]}
        out.append(decider.decide(row, dict(zip(keys, sources[sample], strict=True)), said))
    return out
