"""The optional LLM writer against a fake OpenAI-compatible endpoint on loopback (never the internet)."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from grok.grounding.spans import strip_conversation
from grok.knowledge import evaluate_row, load_knowledge_base
from grok.knowledge.instructions import EyeCase, InstructionBuilder
from grok.knowledge.llm_writer import LLMWriter
from grok.knowledge.writer import ReportWriter, conclude
from helpers import FakeEndpoint
from knowledge_rows import normal_row

KB = load_knowledge_base()
BUILDER = InstructionBuilder(ReportWriter(KB))


@pytest.fixture
def endpoint() -> Iterator[FakeEndpoint]:
    fake = FakeEndpoint()
    yield fake
    fake.close()


def _writer(endpoint, tmp_path, mode="paraphrase", **extra) -> LLMWriter:
    cfg = {
        "mode": mode,
        "backend": "openai",
        "base_url": endpoint.url,
        "api_key_env": None,
        "model": "fake",
        "model_path": None,
        "temperature": 0.0,
        "max_tokens": 500,
        "timeout_s": 5,
        "max_retries": 2,
        "backoff_s": 0.01,
        "multimodal": False,
        "prompt": mode,
        "cache_dir": str(tmp_path / "cache"),
        "tasks": ["report"],
        "number_tolerance": 0.02,
        "on_reject": "fallback",
        **extra,
    }
    return LLMWriter(cfg, BUILDER, image_root=tmp_path)


def _case_and_record(style="structured"):
    row = normal_row(KB, age=64.0, sex="M")
    row.update(cup_disc_ratio=0.78, gcipl_avg_um=55.0)
    assessment = evaluate_row(row, KB)
    case = EyeCase(
        "S000007_R",
        "R",
        {"oct": "oct/S000007_R.png", "cfp": "cfp/S000007_R.png"},
        ("Glaucoma",),
        assessment,
        conclude(assessment, ["Glaucoma"]),
    )
    conversations, spans = strip_conversation(BUILDER.conversation("report", case, style, random.Random(0)))
    record = {
        "id": case.eye_id,
        "task": "report",
        "style": style,
        "conversations": conversations,
        "quantity_spans": spans,
    }
    return case, record


def _paraphrase(text: str) -> str:
    return text.replace("Quantitative analysis:", "Quantitative analysis:\n").replace("normal range", "reference range")


def test_faithful_paraphrase_is_kept_and_cached(endpoint, tmp_path):
    case, record = _case_and_record()
    deterministic = record["conversations"][1]["value"]
    endpoint.replies = [(200, _paraphrase(deterministic))]
    writer = _writer(endpoint, tmp_path)
    assert writer(record, case) is True
    assert record["conversations"][1]["value"] == _paraphrase(deterministic)
    assert deterministic in endpoint.requests[0]["messages"][0]["content"]
    _, again = _case_and_record()
    assert writer(again, case) is True  # same request: answered from the cache, no second HTTP call
    assert len(endpoint.requests) == 1 and writer.stats["cache_hits"] == 1 and writer.stats["accepted"] == 2


def test_an_accepted_rewrite_gets_its_quantity_spans_by_matching_the_rows_values(endpoint, tmp_path):
    case, record = _case_and_record()
    written = [row for row in record["quantity_spans"] if row[0] == 1]
    deterministic = record["conversations"][1]["value"]
    answer = "Summary first. " + _paraphrase(deterministic)  # every number moves
    endpoint.replies = [(200, answer)]
    writer = _writer(endpoint, tmp_path)
    assert writer(record, case) is True and record["conversations"][1]["value"] == answer
    spans = [row for row in record["quantity_spans"] if row[0] == 1]
    # every number the writer stated is found again, tied to the same quantity, at the place the rewrite states it
    assert [row[3] for row in spans] == [row[3] for row in written]
    assert [answer[s:e] for _, s, e, _ in spans] == [deterministic[s:e] for _, s, e, _ in written]
    assert writer.stats["unmatched_numbers"] == 0 and writer.stats["matched_numbers"] == len(spans)
    assert [row for row in record["quantity_spans"] if row[0] == 0]  # the prompt's spans are kept


def test_numbers_are_matched_to_row_values_within_tolerance_and_unmatched_ones_counted():
    from grok.grounding.matching import match_to_values

    candidates = {"q:macula_central_um": 342.4, "hi:macula_central_um": 310.0, "q:cup_disc_ratio": 0.78}
    names = {"macula_central_um": ["CST"], "cup_disc_ratio": ["VCDR"]}
    text = "CST about 342 um, above 310 um; VCDR 0.8; follow-up in 12 months; HbA1c 7.1"
    result = match_to_values(text, candidates, names, tolerance=0.03)
    assert [(text[s.start : s.end], s.symbol) for s in result.spans] == [
        ("342", "q:macula_central_um"),
        ("310", "hi:macula_central_um"),
        ("0.8", "q:cup_disc_ratio"),  # 0.78 rounded to the number's one decimal
    ]
    assert result.unmatched == ["12", "7.1"]


@pytest.mark.parametrize(
    ("corrupt", "reason"),
    [
        (lambda t: t.replace("0.78", "0.66"), "rejected_numbers"),  # a changed number
        (lambda t: "\n".join(line for line in t.splitlines() if "0.78" not in line), "rejected_numbers"),  # dropped
        (lambda t: t.split("Conclusion:")[0] + "Conclusion: The findings indicate AMD.", "rejected_diagnosis"),
        (lambda t: t + " Systemic hypertension is also present.", "rejected_diagnosis"),  # an extra diagnosis
    ],
)
def test_fact_check_rejects_and_counts_unfaithful_answers(endpoint, tmp_path, corrupt, reason):
    case, record = _case_and_record()
    deterministic = record["conversations"][1]["value"]
    endpoint.replies = [(200, corrupt(deterministic))]
    writer = _writer(endpoint, tmp_path)
    assert writer(record, case) is True  # on_reject=fallback keeps the record ...
    assert record["conversations"][1]["value"] == deterministic  # ... with the deterministic answer
    assert writer.stats["rejected"] == 1 and writer.stats[reason] == 1 and writer.stats["accepted"] == 0


def test_rejected_record_is_dropped_when_configured(endpoint, tmp_path):
    case, record = _case_and_record()
    endpoint.replies = [(200, "Conclusion: normal eye.")]
    assert _writer(endpoint, tmp_path, on_reject="drop")(record, case) is False


def test_transient_errors_are_retried(endpoint, tmp_path):
    case, record = _case_and_record()
    endpoint.replies = [(503, ""), (429, ""), (200, record["conversations"][1]["value"])]
    writer = _writer(endpoint, tmp_path)
    assert writer(record, case) is True
    assert len(endpoint.requests) == 3 and writer.stats["accepted"] == 1


def test_exhausted_retries_count_an_error_and_keep_the_deterministic_answer(endpoint, tmp_path):
    case, record = _case_and_record()
    deterministic = record["conversations"][1]["value"]
    endpoint.replies = [(503, "")] * 3
    writer = _writer(endpoint, tmp_path)
    assert writer(record, case) is True
    assert writer.stats["errors"] == 1 and record["conversations"][1]["value"] == deterministic


def test_paper_mode_sends_images_biomarkers_and_label_and_checks_the_narrative(endpoint, tmp_path):
    for name in ("oct", "cfp"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "S000007_R.png").write_bytes(b"\x89PNG fake")
    case, record = _case_and_record(style="structured")
    narrative = (
        "The right eye of this 64-year-old man shows a vertical cup-to-disc ratio of 0.78, with an enlarged cup on the "
        "photograph, and a GC-IPL of 55 µm, thin on the B-scan. The normal drusen count of 0 argues against AMD. "
        "Taken together, the findings are most consistent with glaucoma."
    )
    endpoint.replies = [(200, narrative), (200, narrative.replace("55 µm", "65 µm"))]
    writer = _writer(endpoint, tmp_path, mode="paper", multimodal=True)
    assert writer(record, case) is True
    assert record["style"] == "narrative" and "single-paragraph" in record["conversations"][0]["value"]
    assert record["conversations"][1]["value"] == narrative
    content = endpoint.requests[0]["messages"][0]["content"]
    assert [part["type"] for part in content] == ["text", "image_url", "image_url"]
    assert "OCT_Measures" in content[0]["text"] and '"cup_disc_ratio": 0.78' in content[0]["text"]
    assert "glaucoma" in content[0]["text"].lower()
    _, second = _case_and_record(style="narrative")
    second["id"] = "other"
    writer.cache.folder = tmp_path / "cache2"  # force a fresh request
    assert writer(second, case) is True and writer.stats["rejected_numbers"] == 1


def _tiny_local_model(folder):
    """A 1-layer random Qwen2 with a small byte-level BPE tokenizer, saved in the real transformers formats."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(["the cup-to-disc ratio is 0.78: glaucoma, normal report"] * 10, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = "{% for m in messages %}{{ m['content'] }} {% endfor %}"
    config = Qwen2Config(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=4096,
    )
    Qwen2ForCausalLM(config).save_pretrained(folder)
    fast.save_pretrained(folder)


def test_local_transformers_backend_answers_and_is_fact_checked(tmp_path):
    _tiny_local_model(tmp_path / "model")
    cfg = {
        "mode": "paraphrase",
        "backend": "transformers",
        "model_path": str(tmp_path / "model"),
        "model": None,
        "temperature": 0.0,
        "max_tokens": 6,
        "prompt": "paraphrase",
        "cache_dir": str(tmp_path / "cache"),
        "tasks": ["report"],
        "number_tolerance": 0.02,
        "on_reject": "fallback",
    }
    writer = LLMWriter(cfg, BUILDER, image_root=tmp_path)
    case, record = _case_and_record()
    deterministic = record["conversations"][1]["value"]
    assert writer(record, case) is True
    # a random 1-layer model cannot reproduce the report's numbers: its answer is rejected, never kept
    assert writer.stats["requests"] == 1 and writer.stats["rejected"] == 1
    assert record["conversations"][1]["value"] == deterministic
    assert len(list((tmp_path / "cache").rglob("*.json"))) == 1  # the answer was cached
