"""The value context's judgement head: targets from a record's facts, supervised, and told to the language model."""

from __future__ import annotations

import json
import math

import hydra
import numpy as np
import torch

from grok.grounding.config import GroundingSettings, knowledge_base_of, quantity_tokens_of
from grok.grounding.model import QuantityGrounding, ResolvedQuantities
from grok.grounding.values import QuantityStatistics, judgement_names, table_from_facts, table_from_values
from grok.mllm.collator import InstructCollator
from helpers import compose_config
from mllm_helpers import tiny_overrides, write_instruction_fixture

KB = knowledge_base_of(GroundingSettings())
TOKENS = quantity_tokens_of(GroundingSettings(), KB)
NAMES = judgement_names(KB)


def _resolved(values: dict[str, float]) -> ResolvedQuantities:
    table = table_from_values({"age_years": 60.0, **values}, TOKENS, KB, sex="F")
    v = torch.tensor(table.values, dtype=torch.float32)[None]
    low, high = (torch.tensor(a, dtype=torch.float32)[None] for a in (table.low, table.high))
    return ResolvedQuantities(v, torch.ones_like(v, dtype=torch.long), low, high, torch.full_like(v, math.nan))


def test_a_records_findings_and_diagnoses_become_its_judgement_targets() -> None:
    finding = next(iter(KB.findings))
    facts = {"systemic": {"age_years": 60, "sex": "F"}, "biomarkers": {}, "findings": [finding], "diagnoses": ["AMD"]}
    targets = table_from_facts(facts, TOKENS, KB).as_item()["judgement_targets"]
    assert targets.shape == (len(NAMES),) and targets.sum() == 2
    assert targets[NAMES.index(finding)] == 1 and targets[NAMES.index("AMD")] == 1
    assert "judgement_targets" not in table_from_values({"age_years": 60}, TOKENS, KB).as_item()  # inference: none


def test_the_judgement_head_learns_a_threshold_from_the_values_and_its_judgements_reach_every_token() -> None:
    torch.manual_seed(0)
    k = len(TOKENS.keys)
    grounding = QuantityGrounding(
        TOKENS, QuantityStatistics(np.zeros(k), np.ones(k)), torch.arange(100, 100 + len(TOKENS.symbols)), 16,
        value_context=True, num_judgements=len(NAMES),
    )  # fmt: skip
    cupping = NAMES.index("suspicious_optic_disc_cupping")
    batch = [_resolved({"cup_disc_ratio": v}) for v in (0.3, 0.5, 0.75, 0.9)]
    fields = [f for f in ResolvedQuantities.__dataclass_fields__ if f != "decisions"]  # the tensors
    quantities = ResolvedQuantities(*(torch.cat([getattr(q, f) for q in batch]) for f in fields))
    targets = torch.zeros(4, len(NAMES))
    targets[2:, cupping] = 1.0  # the knowledge base's cupping threshold (0.70) lies between 0.5 and 0.75
    optimiser = torch.optim.Adam(grounding.value_context.parameters(), lr=1e-2)
    first = float(grounding.judgement_loss(quantities, targets))
    for _ in range(200):
        optimiser.zero_grad()
        grounding.judgement_loss(quantities, targets).backward()
        optimiser.step()
    assert float(grounding.judgement_loss(quantities, targets)) < 0.1 * first
    with torch.no_grad():
        low, high = (grounding.context(q) for q in (batch[0], batch[3]))
        grounding.value_context.judgement_embedding.weight.zero_()
        low_without, high_without = (grounding.context(q) for q in (batch[0], batch[3]))
    # the judgements' embeddings are part of the vector added to every token, and differ between the two eyes
    assert not torch.allclose(high - low, high_without - low_without)


def test_the_mllm_trains_the_judgement_head_beside_the_lm_loss(tmp_path) -> None:
    instructions = write_instruction_fixture(tmp_path / "data")
    train = instructions / "train.jsonl"
    records = [json.loads(line) for line in train.read_text().splitlines()]
    for record in records:  # stage one's facts: the values, and the findings and diagnoses it derived from them
        record["facts"] = {
            "systemic": {"age_years": 60},
            "biomarkers": {},
            "findings": [],
            "diagnoses": record["labels"],
        }
    train.write_text("".join(json.dumps(record) + "\n" for record in records))
    overrides = ["grounding.judgement_head=true", "grounding.judgement_loss_weight=2.0"]
    cfg = compose_config("mllm", tmp_path, tiny_overrides(instructions, overrides))
    module = hydra.utils.instantiate(cfg.model)
    dataset = hydra.utils.instantiate(cfg.data).build_dataset("train")
    batch = InstructCollator(module.tokenizer.pad_token_id)([dataset[0], dataset[1]])
    assert batch["judgement_targets"].shape == (2, len(NAMES))
    output = module.model(batch)
    extra = output["loss"] - output["lm_loss"] - module.model.grounding.readout_loss_weight * output["readout_loss"]
    torch.testing.assert_close(extra, 2.0 * output["judgement_loss"])
    output["loss"].backward()
    assert module.model.grounding.value_context.judgement_head.weight.grad.abs().sum() > 0
