"""The knowledge base stage one's `manifest.json` records, and the one later stages score or phrase under.

`grok-generate` records the knowledge base it wrote with (`knowledge_base: {name, version, path, sha256}`: a shipped
version, or the path of a file of your own, and the file's hash). `grok-eval` and `grok-infer` use that one unless
told otherwise, so a newer shipped version never silently changes the rules a benchmark scores under.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from grok.knowledge.base import KnowledgeBase, KnowledgeBaseError
from grok.knowledge.parser import load_knowledge_base, shipped_version
from grok.schema.schema import Schema

MANIFEST = "manifest.json"

log = logging.getLogger(__name__)


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes (hex)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def knowledge_base_record(kb: KnowledgeBase) -> dict[str, Any]:
    """What the manifest records of a knowledge base: name, shipped version or file path, and the file's hash."""
    version = shipped_version(kb.path)
    return {"name": kb.name, "version": version, "path": None if version else kb.path, "sha256": file_sha256(kb.path)}


def read_manifest(instructions_dir: str | Path) -> dict[str, Any] | None:
    """`<instructions_dir>/manifest.json`, or None when there is none."""
    path = Path(instructions_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise KnowledgeBaseError(f"{path}: not valid JSON ({error})") from error


def recorded_knowledge_base(manifest: Mapping[str, Any]) -> dict[str, Any] | None:
    """The knowledge base a manifest records: its `knowledge_base` field, or (manifests written before it existed)
    the shipped version named in `config.knowledge_base`, without a hash."""
    if manifest.get("knowledge_base"):
        return dict(manifest["knowledge_base"])
    legacy = (manifest.get("config") or {}).get("knowledge_base") or {}
    if legacy.get("version") is None:
        return None
    return {"name": legacy.get("name"), "version": f"v{legacy['version']}", "path": None, "sha256": None}


def manifest_knowledge_base_version(instructions_dir: str | Path) -> str | None:
    """The shipped version ('v1') stage one wrote `instructions_dir` with; None when there is no manifest, it records
    none, or the knowledge base was a file of your own (`knowledge_base_record` then holds its path)."""
    manifest = read_manifest(instructions_dir)
    record = recorded_knowledge_base(manifest) if manifest is not None else None
    return record.get("version") if record else None


def _describe(record: Mapping[str, Any]) -> str:
    return str(record.get("version") or record.get("path"))


def resolve_knowledge_base(
    version: str | None,
    path: str | Path | None,
    instructions_dir: str | Path,
    schema: Schema | None = None,
    config_key: str = "knowledge_base",
) -> KnowledgeBase:
    """The knowledge base to use beside the instructions in `instructions_dir`.

    `version` or `path` given: that one (a warning when the manifest records another). Neither: the one the manifest
    records, an error naming both when today's file differs from the one the data was written with (another hash)
    or is gone; the latest shipped version when there is no manifest or it records none.
    """
    manifest_path = Path(instructions_dir) / MANIFEST
    manifest = read_manifest(instructions_dir)
    record = recorded_knowledge_base(manifest) if manifest is not None else None
    if version is not None or path is not None:
        kb = load_knowledge_base(version, path, schema)
        if record and _differs(kb, record):
            log.warning(
                "knowledge base %s (%s) differs from %s recorded in %s; using %s as asked",
                kb.name,
                kb.path,
                _describe(record),
                manifest_path,
                kb.path,
            )
        return kb
    if not record:
        kb = load_knowledge_base(None, None, schema)
        log.info("no knowledge base recorded in %s: using the latest shipped one, %s", manifest_path, kb.path)
        return kb
    if record.get("path") and not Path(record["path"]).is_file():
        raise KnowledgeBaseError(
            f"{manifest_path}: the instructions were written with knowledge base {record['path']}, which no longer "
            f"exists; set {config_key}.path (or {config_key}.version) to the one to use"
        )
    kb = load_knowledge_base(record.get("version"), record.get("path"), schema)
    if record.get("sha256") and file_sha256(kb.path) != record["sha256"]:
        raise KnowledgeBaseError(
            f"{manifest_path}: the instructions were written with knowledge base {_describe(record)} "
            f"(sha256 {record['sha256'][:12]}), but {kb.path} now has sha256 {file_sha256(kb.path)[:12]}; rerun "
            f"grok-generate, or set {config_key}.version or {config_key}.path to use today's file anyway"
        )
    return kb


def _differs(kb: KnowledgeBase, record: Mapping[str, Any]) -> bool:
    if record.get("sha256"):
        return file_sha256(kb.path) != record["sha256"]
    return shipped_version(kb.path) != record.get("version")
