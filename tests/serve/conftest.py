"""Session fixtures of the serving tests: one tiny export and one loaded engine shared by every test."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from grok.serve.engine import ReportEngine
from grok.serve.settings import ServeSettings
from helpers import compose_config
from serve_helpers import build_tiny_export


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny export (random weights), built once per session."""
    return build_tiny_export(tmp_path_factory.mktemp("serve_export"))


@pytest.fixture(scope="session")
def engine(tiny_export: Path, tmp_path_factory: pytest.TempPathFactory) -> ReportEngine:
    """The tiny export loaded once as conf/serve.yaml describes it; greedy, 6 new tokens unless a request asks."""
    root = tmp_path_factory.mktemp("serve_engine")
    return ReportEngine.from_config(
        compose_config("serve", root, [f"model_dir={tiny_export}", "generation.max_new_tokens=6"])
    )


@pytest.fixture
def serve_settings(tmp_path: Path, tiny_export: Path) -> Callable[..., ServeSettings]:
    """Settings from conf/serve.yaml with overrides: serve_settings(["limits.max_images=1"], api_key="k")."""

    def _make(overrides: Sequence[str] = (), api_key: str | None = None) -> ServeSettings:
        cfg = compose_config("serve", tmp_path, [f"model_dir={tiny_export}", *overrides])
        return ServeSettings.from_config(cfg, api_key)

    return _make


@pytest.fixture
def make_client(engine: ReportEngine, serve_settings) -> Iterator[Callable]:
    """A started TestClient over a fresh app: make_client(["batching.window_ms=50"], api_key=None, engine=None)."""
    from fastapi.testclient import TestClient

    from grok.serve.app import create_app

    clients = []

    def _make(overrides: Sequence[str] = (), api_key: str | None = None, engine_override=None) -> TestClient:
        client = TestClient(create_app(engine_override or engine, serve_settings(overrides, api_key)))
        client.__enter__()
        clients.append(client)
        return client

    yield _make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture(scope="session")
def eye_images(syntheye_dir: Path) -> tuple[Path, Path]:
    """One SynthEye eye's OCT B-scan and fundus photograph."""
    oct_path = sorted((syntheye_dir / "oct").iterdir())[0]
    return oct_path, syntheye_dir / "cfp" / oct_path.name
