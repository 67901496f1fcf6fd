"""The knowledge base later stages use: the one stage one's manifest records, unless the user asks for another."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from grok.knowledge import KnowledgeBaseError, load_knowledge_base
from grok.knowledge.manifest import file_sha256, knowledge_base_record, resolve_knowledge_base

KB = load_knowledge_base("v1")


def _manifest(folder: Path, **fields) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_text(json.dumps({"format": "grok-instructions/1", **fields}), encoding="utf-8")
    return folder


def _own_kb(tmp_path: Path, name: str = "my_kb.yaml") -> Path:
    path = tmp_path / name
    path.write_text(Path(KB.path).read_text(encoding="utf-8").replace("name: grok-kb-v1", "name: my-kb"), "utf-8")
    return path


def test_null_means_the_manifests_knowledge_base(tmp_path):
    own = _own_kb(tmp_path)
    folder = _manifest(tmp_path / "own", knowledge_base=knowledge_base_record(load_knowledge_base(path=own)))
    assert resolve_knowledge_base(None, None, folder).name == "my-kb"
    shipped = _manifest(tmp_path / "shipped", knowledge_base=knowledge_base_record(KB))
    assert resolve_knowledge_base(None, None, shipped) is KB


def test_a_changed_knowledge_base_file_is_an_error_unless_asked_for(tmp_path, caplog):
    own = _own_kb(tmp_path)
    folder = _manifest(tmp_path / "data", knowledge_base=knowledge_base_record(load_knowledge_base(path=own)))
    own.write_text(own.read_text(encoding="utf-8") + "\n# edited after the data were written\n", "utf-8")
    with pytest.raises(KnowledgeBaseError) as error:
        resolve_knowledge_base(None, None, folder)
    message = str(error.value)
    assert str(folder / "manifest.json") in message and str(own.resolve()) in message
    assert "rerun grok-generate" in message and "knowledge_base.path" in message
    with caplog.at_level(logging.WARNING, logger="grok.knowledge.manifest"):
        asked = resolve_knowledge_base(None, own, folder)
    assert asked.path == str(own.resolve()) and "differs from" in caplog.text


def test_asking_for_another_version_warns_and_is_obeyed(tmp_path, caplog):
    own = _own_kb(tmp_path)
    folder = _manifest(tmp_path / "data", knowledge_base=knowledge_base_record(load_knowledge_base(path=own)))
    with caplog.at_level(logging.WARNING, logger="grok.knowledge.manifest"):
        assert resolve_knowledge_base("v1", None, folder) is KB
    assert "my_kb.yaml" in caplog.text and "using" in caplog.text


def test_a_recorded_file_that_is_gone_is_an_error(tmp_path):
    own = _own_kb(tmp_path, "gone.yaml")
    folder = _manifest(tmp_path / "data", knowledge_base=knowledge_base_record(load_knowledge_base(path=own)))
    own.unlink()
    with pytest.raises(KnowledgeBaseError, match=r"gone\.yaml, which no longer exists"):
        resolve_knowledge_base(None, None, folder)


def test_no_manifest_means_latest_and_an_older_manifest_its_config_version(tmp_path):
    assert resolve_knowledge_base(None, None, tmp_path / "nothing").path == load_knowledge_base().path
    legacy = _manifest(tmp_path / "legacy", config={"knowledge_base": {"name": "grok-kb-v1", "version": 1}})
    assert resolve_knowledge_base(None, None, legacy) is KB
    assert file_sha256(KB.path) == knowledge_base_record(KB)["sha256"]


def test_grok_eval_scores_under_the_manifests_knowledge_base(make_config, tmp_path):
    from grok.bench.evaluate import build_benchmark

    own = _own_kb(tmp_path)
    folder = _manifest(tmp_path / "data", knowledge_base=knowledge_base_record(load_knowledge_base(path=own)))
    overrides = [f"reference_path={folder / 'test.jsonl'}", "embedding=null", "meteor=false"]
    assert build_benchmark(make_config("eval", overrides), []).clinical.kb.name == "my-kb"
    own.write_text(own.read_text(encoding="utf-8") + "\n# edited\n", "utf-8")
    with pytest.raises(KnowledgeBaseError, match="rerun grok-generate"):
        build_benchmark(make_config("eval", overrides), [])
    assert build_benchmark(make_config("eval", [*overrides, "knowledge_base.version=v1"]), []).clinical.kb is KB
