"""Bad instruction, predictions, reference and conversion files, checkpoints and exports: each is refused with an
InputError naming the file (and line, field or tensor), and the console commands print it as one line, exit status 2.

Every case builds the bad file in tmp_path as a user (or an attacker) would hand it over.
"""

from __future__ import annotations

import json
import pickle
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from grok.utils.errors import DEBUG_ENV, EXIT_BAD_INPUT, InputError, is_bad_input, one_line
from mllm_helpers import tiny_overrides, write_instruction_fixture

GOOD_TURNS = [{"from": "human", "value": "<oct>\n<cfp>\nWrite the report."}, {"from": "gpt", "value": "Normal."}]
GOOD = {
    "id": "S000001_R",
    "eye_id": "S000001_R",
    "task": "report",
    "images": {"oct": "oct/a.png", "cfp": "cfp/a.png"},
    "conversations": GOOD_TURNS,
    "labels": ["Normal"],
    "facts": {"diagnoses": ["Normal"]},
}


def _with(**changes: object) -> str:
    """GOOD with `changes` (a value of None removes the key), as one JSON line."""
    record = {**GOOD, **changes}
    return json.dumps({key: value for key, value in record.items() if value is not None})


def _turns(*turns: object) -> str:
    return _with(conversations=list(turns))


def _error_of(call: Callable[[], object]) -> BaseException:
    """The bad-input error `call` raises (failing the test when it raises a bug or nothing)."""
    try:
        call()
    except Exception as error:  # the type is what the test checks
        assert is_bad_input(error) and isinstance(error, (InputError, FileNotFoundError)), repr(error)
        return error
    raise AssertionError("no error raised")


# ------------------------------------------------------------------------------------------- instruction JSONL
INSTRUCTION_LINES = {
    "invalid_json": ('{"id": "S1", "conversations": [', "expected one JSON object per line"),
    "array_not_object": ("[1, 2, 3]", "expected a JSON object, got list"),
    "string_not_object": ('"just text"', "expected a JSON object, got str"),
    "no_conversations": (_with(conversations=None), "no 'conversations' (expected a list"),
    "empty_conversations": (_with(conversations=[]), "'conversations': expected a non-empty list"),
    "conversations_string": (_with(conversations="Write the report."), "got a str"),
    "turn_not_object": (_turns("hello", GOOD_TURNS[1]), "'conversations[0]': expected a {from, value} object"),
    "turn_without_from": (_turns({"value": "x"}, GOOD_TURNS[1]), "'conversations[0]': no 'from'"),
    "turn_without_value": (_turns(GOOD_TURNS[0], {"from": "gpt"}), "'conversations[1]': no 'value'"),
    "unknown_role": (_turns({"from": "doctor", "value": "x"}, GOOD_TURNS[1]), "unknown role 'doctor'"),
    "value_not_string": (
        _turns(GOOD_TURNS[0], {"from": "gpt", "value": 3}),
        "'conversations[1].value': expected a str",
    ),
    "empty_answer": (_turns(GOOD_TURNS[0], {"from": "gpt", "value": "   "}), "'conversations[1].value': empty answer"),
    "unknown_label": (_with(labels=["Cataract"]), "unknown label(s) ['Cataract']"),
    "labels_string": (_with(labels="AMD"), "field 'labels': 'AMD' (expected a list"),
    "images_list": (_with(images=["oct/a.png"]), "field 'images': expected an object"),
    "images_unknown_modality": (_with(images={"fa": "fa/a.png"}), "unknown modality 'fa'"),
    "images_path_number": (_with(images={"oct": 7}), "field 'images.oct': 7"),
    "empty_id": (_with(id=""), "field 'id': ''"),
    "facts_list": (_with(facts=["Normal"]), "field 'facts': expected a JSON object"),
    "spans_string": (_with(quantity_spans="0:1"), "field 'quantity_spans': expected a JSON list"),
}


@pytest.mark.parametrize("case", sorted(INSTRUCTION_LINES))
def test_a_bad_instruction_line_is_refused_naming_file_and_line(case: str, tmp_path: Path) -> None:
    from grok.mllm.instructions import InstructionFormatError, read_instructions

    line, expected = INSTRUCTION_LINES[case]
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(GOOD) + "\n\n" + line + "\n", encoding="utf-8")  # a blank line 2 is skipped
    error = _error_of(lambda: read_instructions(path))
    assert isinstance(error, InstructionFormatError)
    assert f"{path}:3: " in str(error) and expected in str(error)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "no records (an empty file"),
        (b"\n  \n\n", "no records (an empty file"),
        (json.dumps(GOOD).encode() + b"\n\xff\xfe\x00binary\n", ":2: not UTF-8 text"),
    ],
    ids=["empty", "blank_lines_only", "binary_line"],
)
def test_an_empty_or_binary_instruction_file_is_refused(content: bytes, expected: str, tmp_path: Path) -> None:
    from grok.mllm.instructions import InstructionFormatError, read_instructions

    path = tmp_path / "val.jsonl"
    path.write_bytes(content)
    error = _error_of(lambda: read_instructions(path))
    assert isinstance(error, InstructionFormatError) and str(path) in str(error) and expected in str(error)


def test_a_folder_instead_of_an_instruction_file_is_refused(tmp_path: Path) -> None:
    from grok.mllm.instructions import InstructionFormatError, read_instructions

    (tmp_path / "test.jsonl").mkdir()
    error = _error_of(lambda: read_instructions(tmp_path / "test.jsonl"))
    assert isinstance(error, InstructionFormatError) and "test.jsonl: is a folder" in str(error)


def test_a_malformed_manifest_is_refused_naming_it(tmp_path: Path) -> None:
    from grok.mllm.datamodule import image_root_of
    from grok.mllm.instructions import InstructionFormatError

    (tmp_path / "manifest.json").write_text('{"image_root": ', encoding="utf-8")
    error = _error_of(lambda: image_root_of(tmp_path))
    assert isinstance(error, InstructionFormatError) and "manifest.json: not valid JSON" in str(error)


# ------------------------------------------------------------------------------------------- weights files
def _safetensors_bytes(tmp_path: Path) -> bytes:
    save_file({"w": torch.zeros(16)}, str(tmp_path / "good.safetensors"), metadata={"format": "x"})
    return (tmp_path / "good.safetensors").read_bytes()


def _torch_bytes(tmp_path: Path) -> bytes:
    torch.save({"model": {"w": torch.zeros(16)}}, tmp_path / "good.pth")
    return (tmp_path / "good.pth").read_bytes()


BROKEN_WEIGHTS: dict[str, tuple[str, Callable[[Path], bytes], str]] = {
    "safetensors_truncated": (".safetensors", lambda t: _safetensors_bytes(t)[:-9], "not a readable safetensors"),
    "safetensors_header_only": (".safetensors", lambda t: _safetensors_bytes(t)[:20], "not a readable safetensors"),
    "safetensors_empty": (".safetensors", lambda t: b"", "not a readable safetensors"),
    "safetensors_text": (".safetensors", lambda t: b"version https://git-lfs.github.com/spec/v1\n", "not a readable"),
    "torch_truncated": (".pth", lambda t: _torch_bytes(t)[:200], "not a readable torch checkpoint"),
    "torch_empty": (".pth", lambda t: b"", "not a readable torch checkpoint"),
    "torch_text": (".pth", lambda t: b"hello, I am not a checkpoint\n", "not a readable torch checkpoint"),
    "torch_plain_pickle": (".pth", lambda t: pickle.dumps({"a": 1}, protocol=4), "not a torch checkpoint"),
}


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch's note on the plain pickle case
@pytest.mark.parametrize("case", sorted(BROKEN_WEIGHTS))
def test_a_broken_encoder_checkpoint_is_refused_naming_its_path(case: str, tmp_path: Path) -> None:
    from grok.models.encoders import RetinaViT, load_checkpoint
    from grok.models.encoders.checkpoints import CheckpointReadError

    suffix, content, expected = BROKEN_WEIGHTS[case]
    path = tmp_path / f"RETFound_mae{suffix}"
    path.write_bytes(content(tmp_path))
    model = RetinaViT(img_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=2)
    error = _error_of(lambda: load_checkpoint(model, path, "retfound_mae"))
    assert isinstance(error, CheckpointReadError) and one_line(error).startswith(f"{path}: {expected}")


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_a_folder_instead_of_a_checkpoint_is_refused(suffix: str, tmp_path: Path) -> None:
    from grok.models.encoders import read_state_file
    from grok.models.encoders.checkpoints import CheckpointReadError

    (tmp_path / f"weights{suffix}").mkdir()
    error = _error_of(lambda: read_state_file(tmp_path / f"weights{suffix}"))
    assert isinstance(error, CheckpointReadError) and f"weights{suffix}: is a folder" in str(error)


def test_a_pickled_payload_is_refused_as_bad_input_without_running_it(tmp_path: Path) -> None:
    from grok.models.encoders import PickledCheckpointError, read_state_file

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    crafted = tmp_path / "RETFound_mae.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "extra": Payload()}, crafted)
    error = _error_of(lambda: read_state_file(crafted))
    assert isinstance(error, PickledCheckpointError) and not marker.exists()
    assert one_line(error).startswith(f"{crafted}: refused to unpickle") and "Unsupported global" in str(error)


def test_a_mismatched_checkpoint_names_its_path_on_the_first_line(tmp_path: Path) -> None:
    from grok.models.encoders import CheckpointMismatchError, RetinaViT, load_checkpoint

    path = tmp_path / "RETFound_mae.pth"
    torch.save({"model": RetinaViT(img_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=2).state_dict()}, path)
    deeper = RetinaViT(img_size=16, patch_size=8, embed_dim=16, depth=2, num_heads=2)
    error = _error_of(lambda: load_checkpoint(deeper, path, "retfound_mae"))
    assert isinstance(error, CheckpointMismatchError)
    assert one_line(error).startswith(f"{path}: checkpoint does not match") and "missing (e.g. blocks.1." in one_line(
        error
    )


def _encoder_export(tmp_path: Path) -> Path:
    from grok.models.encoders import RetinaViT, export_encoder

    model = RetinaViT(img_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=2)
    return export_encoder(model, tmp_path / "align" / "oct_encoder.safetensors")


ENCODER_EXPORTS: dict[str, tuple[Callable[[Path], None], str, str]] = {
    "weights_truncated": (
        lambda p: p.write_bytes(p.read_bytes()[:-40]),
        "oct_encoder.safetensors: not a readable safetensors file",
        "CheckpointReadError",
    ),
    "config_not_json": (
        lambda p: p.with_suffix(".json").write_text("{format: grok", encoding="utf-8"),
        "oct_encoder.json: not valid JSON",
        "EncoderExportError",
    ),
    "config_other_format": (
        lambda p: p.with_suffix(".json").write_text('{"format": "timm"}', encoding="utf-8"),
        "oct_encoder.json: expected format 'grok-retina-vit'",
        "EncoderExportError",
    ),
    "architecture_unknown_key": (
        lambda p: p.with_suffix(".json").write_text(
            json.dumps({"format": "grok-retina-vit", "architecture": {"img_size": 16, "layers": 3}}), encoding="utf-8"
        ),
        "oct_encoder.json: 'architecture'",
        "CheckpointMismatchError",
    ),
}


@pytest.mark.parametrize("case", sorted(ENCODER_EXPORTS))
def test_a_broken_aligned_encoder_export_is_refused_naming_the_file(case: str, tmp_path: Path) -> None:
    from grok.mllm.encoders import build_oct_encoder

    damage, expected, kind = ENCODER_EXPORTS[case]
    weights = _encoder_export(tmp_path)
    damage(weights)
    error = _error_of(lambda: build_oct_encoder(str(weights)))
    assert type(error).__name__ == kind and expected in one_line(error)


# ------------------------------------------------------------------------------------------- MLLM exports
@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from serve_helpers import build_tiny_export

    return build_tiny_export(tmp_path_factory.mktemp("bad_inputs_export"))


@pytest.fixture
def export_copy(tiny_export: Path, tmp_path: Path) -> Path:
    """A copy of the tiny export this test may damage."""
    return Path(shutil.copytree(tiny_export, tmp_path / "mllm"))


def _drop_tensor(export: Path, part: str) -> str:
    """Rewrite trainable.safetensors without the first tensor whose key holds `part`; return that key."""
    path = export / "trainable.safetensors"
    state = load_file(str(path))
    key = next(k for k in sorted(state) if part in k)
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        metadata = handle.metadata()
    save_file({k: v for k, v in state.items() if k != key}, str(path), metadata=metadata)
    return key


def _add_tensor(export: Path) -> None:
    path = export / "trainable.safetensors"
    save_file({**load_file(str(path)), "model.fusion.backdoor.weight": torch.zeros(2)}, str(path))


EXPORT_DAMAGE: dict[str, tuple[Callable[[Path], object], str]] = {
    "projector_weight_missing": (lambda e: _drop_tensor(e, "projector"), "trainable.safetensors: lacks 1 trainable"),
    "unexpected_tensor": (_add_tensor, "trainable.safetensors: 1 tensor(s) not in the model rebuilt"),
    "weights_truncated": (
        lambda e: (e / "trainable.safetensors").write_bytes((e / "trainable.safetensors").read_bytes()[:-100]),
        "trainable.safetensors: not a readable safetensors file",
    ),
    "weights_missing": (lambda e: (e / "trainable.safetensors").unlink(), "trained MLLM weights not found: "),
    "config_empty": (
        lambda e: (e / "mllm_config.yaml").write_text("", encoding="utf-8"),
        "mllm_config.yaml: expected a mapping with 'model' and 'data'",
    ),
    "config_not_yaml": (
        lambda e: (e / "mllm_config.yaml").write_text("model: {a: [1, 2\n", encoding="utf-8"),
        "mllm_config.yaml: not a valid YAML config",
    ),
    "config_a_list": (
        lambda e: (e / "mllm_config.yaml").write_text("- 1\n- 2\n", encoding="utf-8"),
        "mllm_config.yaml: expected a mapping with 'model' and 'data'",
    ),
    "config_foreign_target": (
        lambda e: (e / "mllm_config.yaml").write_text(
            "model: {_target_: os.system, command: 'touch pwned'}\ndata: {}\n", encoding="utf-8"
        ),
        "mllm_config.yaml: model._target_='os.system' is not allowed",
    ),
    "vocab_map_not_json": (
        lambda e: (e / "vocab_map.json").write_text("[1, 2,", encoding="utf-8"),
        "vocab_map.json: not valid JSON",
    ),
}


@pytest.mark.parametrize("case", sorted(EXPORT_DAMAGE))
def test_a_damaged_mllm_export_is_refused_naming_the_file(case: str, export_copy: Path) -> None:
    from grok.mllm.export import load_exported_mllm

    damage, expected = EXPORT_DAMAGE[case]
    damage(export_copy)
    error = _error_of(lambda: load_exported_mllm(export_copy))
    assert expected in one_line(error) and str(export_copy) in one_line(error)
    if case == "projector_weight_missing":
        assert "projector" in one_line(error)


def test_a_file_given_as_the_export_folder_is_refused(tmp_path: Path) -> None:
    from grok.mllm.export import ExportError, load_exported_mllm

    (tmp_path / "mllm.zip").write_bytes(b"PK\x03\x04")
    error = _error_of(lambda: load_exported_mllm(tmp_path / "mllm.zip"))
    assert isinstance(error, ExportError) and "mllm.zip: is a file" in str(error)


# ------------------------------------------------------------------------------------------- grok-eval files
def _reference_line(eye_id: str, labels: list[str] | str = "AMD") -> str:
    labels = [labels] if isinstance(labels, str) else labels
    return json.dumps({"id": eye_id, "eye_id": eye_id, "task": "report", "labels": labels, "conversations": GOOD_TURNS})


PREDICTIONS: dict[str, tuple[bytes, str]] = {
    "csv": (b"id,prediction\nS000001_R,Normal.\n", "model_test.jsonl:1: bad_json"),
    "binary": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe\n", "model_test.jsonl:1: bad_encoding"),
    "empty": (b"", "model_test.jsonl: no prediction records (an empty file"),
    "only_broken_records": (
        b'{"prediction": "no id"}\n{"id": "S000001_R", "prediction": ""}\n',
        "model_test.jsonl:1: missing_id",
    ),
}


@pytest.mark.parametrize("case", sorted(PREDICTIONS))
def test_a_predictions_file_without_a_usable_record_is_refused(case: str, tmp_path: Path) -> None:
    from grok.bench.predictions import PredictionsFileError, load_predictions

    content, expected = PREDICTIONS[case]
    path = tmp_path / "model_test.jsonl"
    path.write_bytes(content)
    error = _error_of(lambda: load_predictions(path, ["AMD", "Normal"]))
    assert isinstance(error, PredictionsFileError) and expected in str(error)


REFERENCES: dict[str, tuple[str, str]] = {
    "unknown_label": (_reference_line("S2", "Cataract"), ":2: field 'labels': unknown label(s) ['Cataract']"),
    "duplicate_id": (_reference_line("S1"), ":2: duplicate reference id 'S1' (first at line 1"),
    "labels_number": (_reference_line("S2").replace('["AMD"]', "3"), ":2: field 'labels': 3"),
    "not_an_object": ('["S2", "AMD"]', ":2: expected a JSON object, got list"),
    "labels_string": (_reference_line("S2").replace('["AMD"]', '"AMD"'), ":2: field 'labels': 'AMD'"),
    "conversations_string": (
        json.dumps({"id": "S2", "task": "report", "labels": ["AMD"], "conversations": "Normal."}),
        ":2: field 'conversations': expected a list",
    ),
    "binary": ("\udcff\udcfe", ":2: not UTF-8 text"),
}


@pytest.mark.parametrize("case", sorted(REFERENCES))
def test_a_bad_reference_line_is_refused_naming_file_and_line(case: str, tmp_path: Path) -> None:
    from grok.bench.references import ReferenceError, load_references

    line, expected = REFERENCES[case]
    path = tmp_path / "test.jsonl"
    path.write_bytes((_reference_line("S1") + "\n" + line + "\n").encode("utf-8", "surrogateescape"))
    error = _error_of(lambda: load_references(path))
    assert isinstance(error, ReferenceError) and f"{path}{expected}" in str(error)


# ------------------------------------------------------------------------------------------- grok-convert inputs
CONVERSIONS: dict[str, tuple[str, bytes, str]] = {
    "binary_csv": (".csv", b"id,report\n\xff\xfe,x\n", "release.csv:2: not UTF-8 text"),
    "duplicate_id_names_both_rows": (
        ".csv",
        b"id,report,label\na,x,AMD\nb,y,AMD\na,z,AMD\n",
        "release.csv: row 4: duplicate id 'a' (first at",
    ),
    "folder": ("", b"", "release: is a folder"),
}


@pytest.mark.parametrize("case", sorted(CONVERSIONS))
def test_a_bad_conversion_input_is_refused_naming_file_and_line(case: str, tmp_path: Path) -> None:
    from grok.bench.convert import ConversionError, read_external
    from grok.schema.schema import load_schema

    suffix, content, expected = CONVERSIONS[case]
    path = tmp_path / f"release{suffix}"
    if suffix:
        path.write_bytes(content)
    else:
        path.mkdir()
    columns = {"id": "id", "report": "report", "label": "label"}
    error = _error_of(lambda: read_external(path, "auto", load_schema(), columns))
    assert isinstance(error, ConversionError) and expected in str(error)


# ------------------------------------------------------------------------------------------- console commands
def run_command(command: str, args: list[str], cwd: Path, monkeypatch, capsys) -> str:
    """Run `grok-<command>` in-process with `args` in `cwd`; assert exit status 2; return its one error line."""
    import importlib

    module = {"train-mllm": "train_mllm", "infer": "infer", "eval": "evaluate", "convert": "convert"}[command]
    main = importlib.import_module(f"grok.cli.{module}").main
    for name in DEBUG_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", [f"grok-{command}", f"paths.root_dir={cwd}", *args])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err
    assert exit_info.value.code == EXIT_BAD_INPUT, err[-3000:]
    assert "Traceback" not in err
    reported = [line for line in err.splitlines() if line.startswith(f"grok-{command}: error: ")]
    assert len(reported) == 1 and err.rstrip().splitlines()[-1] == reported[0], err[-3000:]
    return reported[0]


@pytest.fixture(scope="module")
def instructions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_instruction_fixture(tmp_path_factory.mktemp("bad_inputs_data"), eyes_per_split=4)


def _damaged_instructions(instructions: Path, tmp_path: Path, split: str, line: str) -> Path:
    """A copy of the fixture whose `split`.jsonl gets `line` as its line 3."""
    copy = Path(shutil.copytree(instructions, tmp_path / "instructions"))
    lines = (copy / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
    (copy / f"{split}.jsonl").write_text("\n".join([*lines[:2], line, *lines[3:]]) + "\n", encoding="utf-8")
    return copy


@pytest.mark.parametrize(
    ("split", "line", "expected"),
    [
        ("train", '{"id": "S1", "conversations": [', "train.jsonl:3: not valid JSON"),
        ("train", _with(conversations="Write the report."), "train.jsonl:3: field 'conversations'"),
        ("val", _with(labels=["Cataract"]), "val.jsonl:3: field 'labels': unknown label(s) ['Cataract']"),
    ],
    ids=["bad_json", "conversations_string", "unknown_label"],
)
def test_grok_train_mllm_prints_one_line_for_a_bad_instruction_file(
    split: str, line: str, expected: str, instructions: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    data = _damaged_instructions(instructions, tmp_path, split, line)
    args = tiny_overrides(data, ["adaptation=full", "logger=none", "callbacks=none", "export.enabled=false"])
    reported = run_command("train-mllm", args, tmp_path, monkeypatch, capsys)
    assert expected in reported and str(data) in reported


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("empty_answer", "test.jsonl:3: field 'conversations[1].value': empty answer"),
        ("projector_weight_missing", "trainable.safetensors: lacks 1 trainable weight"),
        ("weights_truncated", "trainable.safetensors: not a readable safetensors file"),
    ],
)
def test_grok_infer_prints_one_line_for_a_bad_file(
    damage: str, expected: str, instructions: Path, export_copy: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    data = instructions
    if damage == "empty_answer":
        data = _damaged_instructions(
            instructions, tmp_path, "test", _turns(GOOD_TURNS[0], {"from": "gpt", "value": ""})
        )
    else:
        EXPORT_DAMAGE[damage][0](export_copy)
    args = [f"model_dir={export_copy}", f"instructions_dir={data}", "generation.max_new_tokens=2", "progress=false"]
    assert expected in run_command("infer", args, tmp_path, monkeypatch, capsys)


@pytest.mark.parametrize(
    ("references", "predictions", "expected"),
    [
        (
            [_reference_line("S1"), '["S2"]'],
            None,
            "test.jsonl:2: expected a JSON object, got list",
        ),
        ([_reference_line("S1"), _reference_line("S2", ["Cataract"])], None, "test.jsonl:2: field 'labels': unknown"),
        ([_reference_line("S1")], b"\xff\xd8\xff\xe0 JFIF \x00\n", "grok_test.jsonl:1: bad_encoding"),
    ],
    ids=["reference_not_object", "reference_unknown_label", "predictions_binary"],
)
def test_grok_eval_prints_one_line_for_a_bad_file(
    references: list[str], predictions: bytes | None, expected: str, tmp_path: Path, monkeypatch, capsys
) -> None:
    reference_path = tmp_path / "refs" / "test.jsonl"
    reference_path.parent.mkdir()
    reference_path.write_text("\n".join(references) + "\n", encoding="utf-8")
    predictions_path = tmp_path / "grok_test.jsonl"
    predictions_path.write_bytes(predictions or b"")
    args = [
        f"reference_path={reference_path}",
        f"predictions=[{predictions_path}]",
        "embedding=null",
        "meteor=false",
        "bootstrap.resamples=10",
    ]
    assert expected in run_command("eval", args, tmp_path, monkeypatch, capsys)


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("model.csv", b"id,report,label\n\x00\xff\xfe,x,AMD\n", "model.csv:2: not UTF-8 text"),
        ("model.csv", b"id,report,label\na,x,AMD\na,y,AMD\n", "model.csv: row 3: duplicate id 'a'"),
        ("release.json", b'[{"id": "a", "label": "AMD", "conversations": "x"}]', "release.json: record 0: field"),
    ],
    ids=["binary_csv", "duplicate_id", "conversations_string"],
)
def test_grok_convert_prints_one_line_and_writes_nothing(
    name: str, content: bytes, expected: str, tmp_path: Path, monkeypatch, capsys
) -> None:
    source = tmp_path / name
    source.write_bytes(content)
    out = tmp_path / "out" / "ref.jsonl"
    args = [f"input={source}", f"reference_out={out}", f"predictions_out={tmp_path / 'out' / 'm_test.jsonl'}"]
    assert expected in run_command("convert", args, tmp_path, monkeypatch, capsys)
    assert not (tmp_path / "out").exists()


def test_an_input_error_met_while_hydra_builds_an_object_is_still_bad_input() -> None:
    import hydra
    from omegaconf import OmegaConf

    node = OmegaConf.create({"_target_": "grok.mllm.instructions.read_instructions", "path": "/nowhere/train.jsonl"})
    with pytest.raises(hydra.errors.InstantiationException) as error:
        hydra.utils.instantiate(node)
    assert is_bad_input(error.value) and one_line(error.value).startswith(
        "instruction file /nowhere/train.jsonl not found"
    )
