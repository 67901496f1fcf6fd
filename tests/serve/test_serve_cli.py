"""`grok-serve` as a command: its security defaults, `--api-key` kept out of Hydra's saved config, and a real start on
a tiny export answering on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from grok.cli.serve import take_api_key
from helpers import compose_config


def test_security_defaults(tmp_path: Path) -> None:
    cfg = compose_config("serve", tmp_path)
    assert cfg.host == "127.0.0.1"  # loopback unless told otherwise
    assert list(cfg.cors_origins) == []  # no CORS headers
    assert cfg.images.allow_remote is False and cfg.images.local_root is None  # data: URLs only
    assert "api_key" not in cfg  # the key never sits in a config Hydra saves


def test_api_key_flag_is_taken_off_the_command_line() -> None:
    assert take_api_key(["--api-key", "s3cret", "port=9000"]) == ("s3cret", ["port=9000"])
    assert take_api_key(["port=9000", "--api-key=s3cret"]) == ("s3cret", ["port=9000"])
    assert take_api_key(["port=9000"]) == (None, ["port=9000"])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_grok_serve_starts_on_an_export_and_requires_its_key(tiny_export: Path, tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [
        sys.executable, "-m", "grok.cli.serve", "--api-key", "flag-key", f"model_dir={tiny_export}",
        f"port={port}", f"paths.root_dir={tmp_path}", "log_level=warning",
    ]  # fmt: skip
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.stdout.read()
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "grok-serve did not start in 120 s"
            time.sleep(0.3)
        assert httpx.get(f"{url}/v1/models").status_code == 401
        models = httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer flag-key"}).json()
        assert models["data"][0]["id"] == "grok"
    finally:
        server.terminate()
        server.wait(30)
    saved = "".join(p.read_text() for p in (tmp_path / "logs").rglob("*.yaml"))
    assert "model_dir" in saved and "flag-key" not in saved
