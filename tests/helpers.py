"""Test helpers importable from any test module (pytest puts tests/ on sys.path)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from grok.utils.config import config_dir


def compose_config(config_name: str, root: Path, overrides: Sequence[str] = ()) -> DictConfig:
    """Compose `conf/<config_name>.yaml` as Hydra would, with every path under `root`."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name, overrides=[f"paths.root_dir={root}", *overrides], return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(root / "run")
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    (root / "run").mkdir(parents=True, exist_ok=True)
    return cfg


class FakeEndpoint:
    """A fake OpenAI-compatible server on 127.0.0.1: answers /chat/completions with queued (status, text) pairs
    (then with `default_reply(request)`) and records the requests it got."""

    def __init__(self, default_reply: Callable[[dict], str] | None = None) -> None:
        self.replies: list[tuple[int, str]] = []
        self.default_reply = default_reply
        self.requests: list[dict] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                endpoint.requests.append(body)
                status, text = endpoint.replies.pop(0) if endpoint.replies else (200, endpoint.default_reply(body))
                payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
