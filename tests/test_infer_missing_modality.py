"""A modality missing at inference: the prompt loses the image, and nothing of that image is estimated or quoted."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from grok.cli.infer import without_images
from grok.grounding.config import GroundingSettings, knowledge_base_of, quantity_tokens_of
from grok.grounding.model import QuantityGrounding
from grok.grounding.values import SOURCE_CODES, QuantityStatistics

SETTINGS = GroundingSettings()
KB = knowledge_base_of(SETTINGS)
TOKENS = quantity_tokens_of(SETTINGS, KB)


def _record() -> dict:
    prompt = "<oct>\n<cfp>\n61-year-old woman, right eye. BP 156/95 mmHg.\nWrite the report."
    spans = [[0, prompt.index("61"), prompt.index("61") + 2, "q:age_years"]]
    spans.append([0, prompt.index("156"), prompt.index("156") + 3, "q:sbp_mmhg"])
    return {
        "id": "S1_R",
        "images": {"oct": "oct/S1_R.png", "cfp": "cfp/S1_R.png"},
        "conversations": [{"from": "human", "value": prompt}, {"from": "gpt", "value": "Quantitative analysis:"}],
        "quantity_spans": spans,
    }


def test_removing_an_image_drops_its_placeholder_and_keeps_every_span_on_its_number() -> None:
    record = _record()
    (oct_only,) = without_images([record], ["cfp"])
    prompt = oct_only["conversations"][0]["value"]
    # the prompt says which image is missing, as stage one writes it for an eye without that image
    assert oct_only["images"] == {"oct": "oct/S1_R.png"} and prompt.startswith("<oct>\nNo CFP image.\n61-year-old")
    assert [prompt[start:end] for _, start, end, _ in oct_only["quantity_spans"]] == ["61", "156"]
    assert record["images"].keys() == {"oct", "cfp"} and record["conversations"][0]["value"].count("<cfp>") == 1
    (neither,) = without_images([record], ["oct", "cfp"])
    assert neither["images"] == {}
    assert neither["conversations"][0]["value"].startswith("No OCT image.\nNo CFP image.\n61-year-old")
    with pytest.raises(ValueError, match="unknown modality"):
        without_images([record], ["fundus"])


def test_a_single_case_with_one_image_says_which_is_missing_as_stage_one_does(make_config, tmp_path) -> None:
    from grok.cli.infer import _records

    cfg = make_config("infer", [f"images.cfp={tmp_path / 'fundus.png'}", "prompt=Write the report."])
    (record,), _ = _records(cfg, module=None, data={})
    assert record["images"] == {"cfp": str((tmp_path / "fundus.png").resolve())}
    assert record["conversations"][0]["value"] == "No OCT image.\n<cfp>\nWrite the report."


def test_without_its_image_a_modality_is_neither_estimated_nor_decided_from_estimates() -> None:
    k = len(TOKENS.keys)
    grounding = QuantityGrounding(
        TOKENS, QuantityStatistics(np.zeros(k), np.ones(k)), torch.arange(100, 100 + len(TOKENS.symbols)), 16,
        findings_kb=KB,
    )  # fmt: skip
    grounding.finding_readout.fitted.fill_(True)
    grounding.finding_readout.bias.fill_(5.0)  # would say yes to every finding it decides
    oct_tokens = torch.zeros(1, 4, 16)
    estimates = grounding.estimate({"oct": (oct_tokens, torch.tensor([0]))}, 1, torch.device("cpu"))
    cfp_columns = [TOKENS.key_index[key] for key in TOKENS.image_keys["cfp"]]
    assert torch.isnan(estimates[0, cfp_columns]).all() and not torch.isnan(
        estimates[0, TOKENS.key_index["rnfl_avg_um"]]
    )
    values = torch.full((1, k), math.nan)
    values[0, TOKENS.key_index["age_years"]] = 60.0
    batch = {
        "quantity_values": values,
        "quantity_stated": ~torch.isnan(values),
        "quantity_low": torch.full((1, k), math.nan),
        "quantity_high": torch.full((1, k), math.nan),
        "quantity_sex": ["F"],
    }
    resolved = grounding.resolve(batch, estimates, "auto")
    assert (resolved.source[0, cfp_columns] == SOURCE_CODES["absent"]).all()  # no CFP image: not assessed
    resolved_with_cfp = grounding.resolve({**batch, "cfp_sample_index": torch.tensor([0])}, estimates, "auto")
    assert (resolved_with_cfp.source[0, cfp_columns] == SOURCE_CODES["missing"]).all()  # its image, no estimate
    decided = set(resolved.decisions[0].assessment.finding_ids)
    cfp_findings = {f for f, rule in KB.findings.items() if set(rule.biomarkers) <= set(TOKENS.image_keys["cfp"])}
    assert cfp_findings and not decided & cfp_findings  # the classifiers' yes is never asked for them
    assert decided  # while the OCT findings, resting on estimates, are the classifiers' (all yes here)


def test_modality_dropout_trains_on_stage_ones_record_of_the_eye_without_that_image(
    syntheye_dir, make_config, tmp_path
) -> None:
    from grok.cli.generate import run_generate
    from grok.mllm.datamodule import InstructDataModule
    from grok.mllm.tokenizer import build_tokenizer

    instructions = tmp_path / "instructions"
    run_generate(
        make_config("generate", [f"input_table={syntheye_dir}/biomarkers.parquet", f"output_dir={instructions}",
                                 "progress=false", "limit=12"])
    )  # fmt: skip
    tokenizer = build_tokenizer(extra_tokens=TOKENS.tokens)

    def dataset(dropout):
        module = InstructDataModule(
            str(instructions), tokenizer, {"oct": {"image_size": 32}, "cfp": {"image_size": 32}}, tasks=["report"],
            grounding={"enabled": True}, counterfactual={"probability": 0.0}, modality_dropout=dropout,
        )  # fmt: skip
        return module.build_dataset("train")

    plain, dropped = dataset(None), dataset({"cfp": 1.0})
    cfp_columns = [TOKENS.key_index[key] for key in TOKENS.image_keys["cfp"]]
    oct_columns = [TOKENS.key_index[key] for key in TOKENS.image_keys["oct"]]
    for index in range(len(plain)):
        kept, without = plain[index], dropped[index]
        assert len(kept["cfp_pixels"]) == 1 and not without["cfp_pixels"] and len(without["oct_pixels"]) == 1
        prompt = tokenizer.decode(without["input_ids"])
        assert "<cfp>" not in prompt and "<oct>\nNo CFP image.\n" in prompt
        assert np.isnan(without["quantity_values"][cfp_columns]).all()  # the answer quotes none of them
        np.testing.assert_array_equal(without["quantity_values"][oct_columns], kept["quantity_values"][oct_columns])
        np.testing.assert_array_equal(without["readout_values"], kept["quantity_values"])  # the eye's own
    variant = dropped._without_image(0)
    assert variant["id"].endswith("-without-cfp") and set(variant["images"]) == {"oct"}
    measured = set(plain.records[0]["facts"]["biomarkers"]) & set(TOKENS.image_keys["cfp"])
    assert measured and measured <= set(variant["facts"]["missing"])  # stage one wrote them as not measured
    with pytest.raises(ValueError, match="sum to at most 1"):
        dataset({"oct": 0.6, "cfp": 0.6})
    with pytest.raises(ValueError, match=r"data\.modality_dropout\.fundus=0\.2: expected a probability"):
        dataset({"fundus": 0.2})  # a misspelt modality would otherwise drop nothing, silently
    with pytest.raises(ValueError, match=r"data\.modality_dropout\.cfp=-0\.1"):
        dataset({"cfp": -0.1})
