"""Grounded quantities: value embeddings, source resolution, rendering, forced values, prompts read as quantities."""

from __future__ import annotations

import math

import hydra
import numpy as np
import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from grok.grounding.config import GroundingSettings, knowledge_base_of, quantity_tokens_of
from grok.grounding.matching import read_stated_quantities
from grok.grounding.model import QuantityGrounding, ResolvedQuantities, ValueEmbedding
from grok.grounding.render import ReportRenderer
from grok.grounding.values import SOURCE_CODES, QuantityStatistics, table_from_values
from grok.mllm.collator import InstructCollator
from grok.mllm.generate import NumberGuard, generate_batch
from grok.mllm.tokenizer import build_tokenizer
from helpers import compose_config
from mllm_helpers import tiny_overrides, write_instruction_fixture

SETTINGS = GroundingSettings()
KB = knowledge_base_of(SETTINGS)
TOKENS = quantity_tokens_of(SETTINGS, KB)
K = len(TOKENS.keys)
COLUMN = TOKENS.key_index


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(extra_tokens=TOKENS.tokens)


def _grounding(hidden: int = 16, **options) -> QuantityGrounding:
    statistics = QuantityStatistics(np.zeros(K), np.ones(K))
    rows = torch.arange(100, 100 + len(TOKENS.symbols))
    return QuantityGrounding(TOKENS, statistics, rows, hidden, **options)


def _row(symbol: str) -> int:
    return 100 + TOKENS.symbols.index(TOKENS.symbol(symbol))


def _resolved(values: dict[str, float], source: str = "input", age: float = 60.0, sex: str = "F") -> ResolvedQuantities:
    table = table_from_values({"age_years": age, **values}, TOKENS, KB, sex=sex)
    v = torch.tensor(table.values, dtype=torch.float32)[None]
    code = torch.where(torch.isnan(v), SOURCE_CODES["missing"], SOURCE_CODES[source])
    low, high = (torch.tensor(a, dtype=torch.float32)[None] for a in (table.low, table.high))
    return ResolvedQuantities(v, code, low, high, v.clone() if source == "readout" else torch.full_like(v, math.nan))


def test_the_value_changes_a_quantity_tokens_embedding_and_a_missing_value_gets_the_learned_vector() -> None:
    torch.manual_seed(0)
    grounding = _grounding()
    with torch.no_grad():
        grounding.value_embedding.missing.normal_()
    row = int(grounding.token_rows[TOKENS.symbols.index(TOKENS.symbol("q:macula_central_um"))])
    rows = torch.tensor([[5, row, 7]])
    base = torch.zeros(1, 3, 16)
    thin = grounding.add_value_embeddings(rows, base, _resolved({"macula_central_um": 200.0}))
    thick = grounding.add_value_embeddings(rows, base, _resolved({"macula_central_um": 400.0}))
    missing = grounding.add_value_embeddings(rows, base, _resolved({}))
    assert not torch.allclose(thin[0, 1], thick[0, 1])  # the value reaches the embedding ...
    assert torch.equal(thin[0, [0, 2]], base[0, [0, 2]])  # ... of the quantity token only
    torch.testing.assert_close(missing[0, 1], grounding.value_embedding.missing)  # unknown: the missing vector
    with pytest.raises(RuntimeError, match="without their values"):
        grounding.embedding_hook(None, (rows,), base)


def test_the_tokens_after_a_value_carry_it_the_same_in_training_and_token_by_token_generation() -> None:
    torch.manual_seed(0)
    grounding = _grounding(carry_window=2)
    with torch.no_grad():
        grounding.carry.weight.normal_()
    vcdr, cst = _row("q:cup_disc_ratio"), _row("q:macula_central_um")
    rows = torch.tensor([[5, vcdr, 6, 7, 8, cst, 9, _row("hi:macula_central_um"), 10, 11]])
    base = torch.zeros(1, rows.shape[1], 16)
    quantities = _resolved({"cup_disc_ratio": 0.7, "macula_central_um": 250.0})
    whole = grounding.add_value_embeddings(rows, base, quantities)
    carried = whole.norm(dim=-1)[0] > 0
    # value tokens, the 2 text tokens after each, and the bound token (a quantity token of its own)
    assert carried.tolist() == [False, True, True, True, False, True, True, True, False, False]
    with grounding.values_in_context(quantities):
        steps = [grounding.add_value_embeddings(rows[:, t : t + 1], base[:, t : t + 1], quantities) for t in range(10)]
    torch.testing.assert_close(torch.cat(steps, dim=1), whole)  # generation embeds exactly what training did
    other = grounding.add_value_embeddings(rows, base, _resolved({"cup_disc_ratio": 0.2, "macula_central_um": 250.0}))
    assert not torch.allclose(other[0, 2], whole[0, 2]) and torch.equal(other[0, 6], whole[0, 6])


def test_the_value_context_puts_every_value_and_threshold_at_every_token() -> None:
    torch.manual_seed(0)
    grounding = _grounding(value_context=True)
    with torch.no_grad():
        grounding.value_context.mlp[-1].weight.normal_()
    rows = torch.tensor([[5, 6, 7]])  # no quantity token at all
    base = torch.zeros(1, 3, 16)
    below, above = (
        grounding.add_value_embeddings(rows, base, _resolved({"cup_disc_ratio": v})) for v in (0.69, 0.71)
    )  # the same side of the range (above 0.60), either side of the cupping threshold (0.70)
    assert not torch.allclose(below[0, 0], above[0, 0])
    torch.testing.assert_close(below[0, 0], below[0, 2])  # one vector for every token of the sample


def test_judgement_weights_weigh_the_tokens_right_after_a_value() -> None:
    grounding = _grounding(judgement_weight=5.0, judgement_window=2)
    rows = torch.tensor([[5, _row("q:cup_disc_ratio"), 6, 7, 8, _row("lo:cup_disc_ratio"), 9]])
    assert grounding.judgement_weights(rows)[0].tolist() == [1, 1, 5, 5, 1, 1, 1]
    assert _grounding().judgement_weights(rows) is None  # weight 1: the plain mean
    with pytest.raises(ValueError, match="judgement_weight"):
        _grounding(judgement_weight=0.0)


def test_value_features_place_the_value_in_the_persons_reference_range() -> None:
    low, high = torch.tensor([215.0, 220.0]), torch.tensor([300.0, 310.0])  # CST: women, men (schema strata)
    features = ValueEmbedding.features(torch.tensor([305.0, 305.0]), torch.tensor(260.0), torch.tensor(20.0), low, high)
    below, above = features[:, 2], features[:, 3]
    assert above[0] > 0 and above[1] == 0 and (below == 0).all()  # above the range for her, inside it for him


def test_sources_resolve_stated_values_and_estimates_as_configured() -> None:
    grounding = _grounding()
    stated = table_from_values({"sbp_mmhg": 150.0, "macula_central_um": 330.0}, TOKENS, KB, sex="M")
    batch = {
        "quantity_values": torch.tensor(stated.values)[None],
        "quantity_stated": torch.tensor(stated.stated)[None],
        "quantity_low": torch.tensor(stated.low)[None],
        "quantity_high": torch.tensor(stated.high)[None],
    }
    estimates = torch.full((1, K), math.nan)
    estimates[0, COLUMN["macula_central_um"]] = 290.0
    estimates[0, COLUMN["cup_disc_ratio"]] = 0.5
    value = {s: grounding.resolve(batch, estimates, s).values[0] for s in ("auto", "input", "readout")}
    cst, vcdr, sbp = COLUMN["macula_central_um"], COLUMN["cup_disc_ratio"], COLUMN["sbp_mmhg"]
    assert value["auto"][cst] == 330.0 and value["auto"][vcdr] == pytest.approx(0.5)  # stated wins, else read-out
    assert value["input"][cst] == 330.0 and math.isnan(value["input"][vcdr])  # only what is stated
    assert value["readout"][cst] == 290.0 and value["readout"][sbp] == 150.0  # image-derived from the head
    code = grounding.resolve(batch, estimates, "auto").source[0]
    assert code[vcdr] == SOURCE_CODES["readout"] and code[cst] == SOURCE_CODES["input"]
    with pytest.raises(ValueError, match=r"grounding\.source='guess'"):
        grounding.resolve(batch, estimates, "guess")


def test_rendering_writes_units_decimals_the_estimate_marker_and_the_persons_ranges(tokenizer) -> None:
    renderer = ReportRenderer(tokenizer, TOKENS, KB, estimate_marker="≈")
    text = "CST <q:macula_central_um> µm (normal <lo:macula_central_um>–<hi:macula_central_um> µm), VCDR <q:cup_disc_ratio>, tortuosity <q:arterial_tortuosity>, cupping at <t:suspicious_optic_disc_cupping.cup_disc_ratio>."  # noqa: E501
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    resolved = _resolved({"macula_central_um": 300.4, "cup_disc_ratio": 0.654, "arterial_tortuosity": 1.0871})
    resolved.source[0, COLUMN["cup_disc_ratio"]] = SOURCE_CODES["readout"]
    arrays = [t[0].tolist() for t in (resolved.values, resolved.source, resolved.low, resolved.high)]
    estimates = torch.full((K,), math.nan)
    estimates[COLUMN["cup_disc_ratio"]] = 0.654
    woman, quoted = renderer.render(ids, *arrays, estimates.tolist())
    # 300.4 above her 300 upper limit: one more decimal; a read-out estimate marked; KB threshold 0.7
    assert woman == "CST 300.4 µm (normal 215–300 µm), VCDR ≈0.65, tortuosity 1.087, cupping at 0.70."
    by_symbol = {q.symbol: q for q in quoted}
    assert by_symbol["q:cup_disc_ratio"].source == "readout"
    assert by_symbol["q:cup_disc_ratio"].estimate == pytest.approx(0.654)
    assert by_symbol["hi:macula_central_um"].source == "knowledge_base"
    assert all(woman[q.start : q.end] == q.text.lstrip("≈") for q in quoted)
    man = _resolved({"macula_central_um": 300.4}, sex="M")
    arrays = [t[0].tolist() for t in (man.values, man.source, man.low, man.high)]
    assert renderer.render(ids, *arrays, estimates.tolist())[0].startswith("CST 300 µm (normal 220–310 µm)")


def test_a_quantity_of_an_absent_image_is_written_not_assessed_never_a_number(tokenizer) -> None:
    renderer = ReportRenderer(tokenizer, TOKENS, KB)
    text = "Quantitative analysis:\n- CST: <q:macula_central_um> µm, normal (normal <lo:macula_central_um>–<hi:macula_central_um> µm).\n- VCDR: <q:cup_disc_ratio>, normal."  # noqa: E501
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    resolved = _resolved({"macula_central_um": 300.0, "cup_disc_ratio": 0.6})
    resolved.source[0, COLUMN["macula_central_um"]] = SOURCE_CODES["absent"]  # the value is ignored: no OCT image
    arrays = [t[0].tolist() for t in (resolved.values, resolved.source, resolved.low, resolved.high)]
    text, quoted = renderer.render(ids, *arrays, [math.nan] * K)
    label = KB.schema.biomarkers["macula_central_um"].label
    # the whole sentence is rewritten: no unit, status word or range describes the unmeasured value
    assert text == f"Quantitative analysis:\n- {label}: not assessed (no image).\n- VCDR: 0.60, normal."
    assert [q.source for q in quoted] == ["absent", "input"]
    assert [text[q.start : q.end] for q in quoted] == ["not assessed", "0.60"]
    # a one-line paragraph (narrative style): only the sentence quoting the absent value is rewritten
    paragraph = "The CST is <q:macula_central_um> µm (normal <lo:macula_central_um>–<hi:macula_central_um> µm). The VCDR is <q:cup_disc_ratio>; the rim looks normal."  # noqa: E501
    ids = tokenizer(paragraph, add_special_tokens=False)["input_ids"]
    text, quoted = renderer.render(ids, *arrays, [math.nan] * K)
    assert text == f"{label}: not assessed (no image). The VCDR is 0.60; the rim looks normal."
    assert [(q.source, text[q.start : q.end]) for q in quoted] == [("absent", "not assessed"), ("input", "0.60")]


def test_a_free_text_prompt_is_read_as_quantities(tokenizer) -> None:
    from grok.bench.vocabulary import build_vocabulary

    prompt = "63-year-old woman, right eye. BP 150/92 mmHg, HbA1c 52 mmol/mol. Seen 3 times."
    stated = read_stated_quantities(prompt, build_vocabulary(KB.schema, KB), TOKENS)
    assert {s.symbol: prompt[s.start : s.end] for s in stated.spans} == {
        "q:age_years": "63",
        "q:sbp_mmhg": "150",
        "q:dbp_mmhg": "92",
        "q:hba1c_mmol_mol": "52",
    }
    assert stated.sex == "F" and stated.unmatched == ["3"]


@pytest.fixture(scope="module")
def instructions(tmp_path_factory):
    return write_instruction_fixture(tmp_path_factory.mktemp("grounding_data"))


class ForceSequence(LogitsProcessor):
    """Forces the generated tokens, one per step (the compact rows of a trimmed vocabulary)."""

    def __init__(self, rows: list[int]) -> None:
        self.rows, self.step = rows, 0

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        forced = torch.full_like(scores, -math.inf)
        forced[:, self.rows[min(self.step, len(self.rows) - 1)]] = 0.0
        self.step += 1
        return forced


def test_a_generated_quantity_token_renders_exactly_the_value_the_prompt_states(instructions, tmp_path) -> None:
    overrides = ["adaptation=full", "grounding.qualitative=language_model"]  # the generated text alone
    cfg = compose_config("mllm", tmp_path, tiny_overrides(instructions, overrides))
    module = hydra.utils.instantiate(cfg.model).eval()
    datamodule = hydra.utils.instantiate(cfg.data)
    dataset = datamodule.build_dataset("test", generation=True)
    batch = InstructCollator(module.tokenizer.pad_token_id, "left")([dataset[0]])
    stated_age = dataset.records[0]["conversations"][0]["value"].split("Age ")[1].split(",")[0]
    ids = module.tokenizer.convert_tokens_to_ids(["<q:age_years>", "<|im_end|>"])
    rows = module.model.vocabulary.to_compact(torch.tensor(ids)).tolist()
    (report,) = generate_batch(
        module.model, module.tokenizer, batch, module.renderer, "auto", NumberGuard(module.tokenizer),
        max_new_tokens=3, logits_processor=LogitsProcessorList([ForceSequence(rows)]),
    )  # fmt: skip
    assert report.text == stated_age
    (quoted,) = report.grounding
    assert quoted.symbol == "q:age_years" and quoted.source == "input" and quoted.value == float(stated_age)


def test_with_decided_findings_generation_stops_at_the_findings_header_and_the_kb_writes_the_rest(
    instructions, tmp_path
) -> None:
    overrides = ["adaptation=full", "llm.trim_vocabulary=false"]  # the fixture's texts lack the section headers
    cfg = compose_config("mllm", tmp_path, tiny_overrides(instructions, overrides))
    module = hydra.utils.instantiate(cfg.model).eval()  # grounding.qualitative=finding_readout (the default)
    dataset = hydra.utils.instantiate(cfg.data).build_dataset("test", generation=True)
    batch = InstructCollator(module.tokenizer.pad_token_id, "left")([dataset[0]])
    text = module.tokenizer
    forced = text("- Age ", add_special_tokens=False)["input_ids"] + text.convert_tokens_to_ids(["<q:age_years>"])
    forced += text(".\nQualitative findings:\n- the LM's own finding.", add_special_tokens=False)["input_ids"]
    (report,) = generate_batch(
        module.model, module.tokenizer, batch, module.renderer, "auto", None,
        max_new_tokens=len(forced) + 4, logits_processor=LogitsProcessorList([forcing := ForceSequence(forced)]),
    )  # fmt: skip
    header_end = len(forced) - len(text("\n- the LM's own finding.", add_special_tokens=False)["input_ids"])
    assert forcing.step <= header_end + 1  # generation stopped once the header was written
    stated_age = dataset.records[0]["conversations"][0]["value"].split("Age ")[1].split(",")[0]
    assert report.text.startswith(f"- Age {stated_age}.\nQualitative findings:\n")
    assert "the LM's own finding" not in report.text and "\nConclusion: " in report.text  # stopped at the header
    for quoted in report.grounding:  # the LM's number and every number the writer added, where their spans say
        assert report.text[quoted.start : quoted.end] == quoted.text


def test_grounding_none_keeps_free_digits_and_no_grounding_module(instructions, tmp_path) -> None:
    from grok.mllm.chat import encode_conversation

    cfg = compose_config("mllm", tmp_path, tiny_overrides(instructions, ["grounding=none"]))
    module = hydra.utils.instantiate(cfg.model)
    assert module.model.grounding is None and len(module.tokenizer) == 151648  # Qwen2 + <oct>, <cfp> only
    assert not any(name.startswith("grounding.") for name, _ in module.model.named_parameters())
    datamodule = hydra.utils.instantiate(cfg.data)
    dataset = datamodule.build_dataset("train")
    record = dataset.records[0]
    expected = encode_conversation(module.tokenizer, record["conversations"], system_prompt=cfg.system_prompt)
    assert dataset[0]["input_ids"] == expected.input_ids and "quantity_values" not in dataset[0]
    grounded = hydra.utils.instantiate(compose_config("mllm", tmp_path / "g", tiny_overrides(instructions)).data)
    assert grounded.build_dataset("train")[0]["input_ids"] != expected.input_ids  # the age became one token


def test_the_number_guard_lets_a_digit_continue_a_word_but_never_start_a_number(tokenizer) -> None:
    guard = NumberGuard(tokenizer).processor()
    hba, space, one = (tokenizer(t, add_special_tokens=False)["input_ids"] for t in ("HbA", "normal (", "1"))
    scores = torch.zeros(3, len(tokenizer))
    guarded = guard(torch.tensor([[hba[-1]], [space[-1]], [one[-1]]]), scores)
    digit = one[0]
    assert guarded[0, digit] == 0  # 'HbA' + '1' + 'c'
    assert guarded[1, digit] == -math.inf and guarded[2, digit] == -math.inf  # after punctuation, after a digit
    assert guard(torch.zeros(1, 0, dtype=torch.long), torch.zeros(1, len(tokenizer)))[0, digit] == -math.inf


def test_the_ridge_readout_is_fitted_once_in_closed_form_and_saved_with_the_trainable_weights(tmp_path) -> None:
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from grok.grounding.readout import RidgeReadout

    generator = torch.Generator().manual_seed(0)
    tokens = torch.randn(60, 4, 3, generator=generator)
    truth = tokens.flatten(1) @ torch.randn(12, 2, generator=generator)
    targets = truth + 0.1 * torch.randn(60, 2, generator=generator)
    targets[:5, 1] = float("nan")  # unknown for five images: that quantity is fitted on the other 55
    head = RidgeReadout(4, 3, 2)
    assert torch.equal(head(tokens), torch.zeros(60, 2)) and not head.fitted  # the training mean before the fit
    alphas = [0.1, 1.0, 10.0]
    head.fit(tokens, targets, alphas)
    for column, rows in ((0, slice(None)), (1, slice(5, None))):
        reference = make_pipeline(StandardScaler(), RidgeCV(alphas=alphas)).fit(
            tokens.flatten(1)[rows].numpy(), targets[rows, column].numpy()
        )
        expected = torch.tensor(reference.predict(tokens.flatten(1).numpy()), dtype=torch.float32)
        torch.testing.assert_close(head(tokens)[:, column], expected, atol=1e-4, rtol=1e-4)
    reloaded = RidgeReadout(4, 3, 2)
    reloaded.load_state_dict(head.state_dict())  # buffers: saved with the trainable weights and the export
    assert torch.equal(reloaded(tokens), head(tokens)) and reloaded.fitted
