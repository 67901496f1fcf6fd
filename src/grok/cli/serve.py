"""`grok-serve`: the OpenAI-compatible API and the clinicians' page over one MLLM export (conf/serve.yaml).

`--api-key KEY` (or the variable named by `api_key_env`, GROK_API_KEY) turns on bearer-token auth; the flag is taken
off the command line before Hydra sees it, so the key is never written into the run folder.
"""

from __future__ import annotations

import logging
import os
import sys

from omegaconf import DictConfig

from grok.utils.config import hydra_entry

log = logging.getLogger(__name__)
LOOPBACK = ("127.0.0.1", "localhost", "::1")
_flag_api_key: str | None = None


def build_app(cfg: DictConfig, api_key: str | None = None):
    """The FastAPI app for a composed `serve` config (the export is loaded here, once)."""
    import torch

    from grok.serve.app import create_app
    from grok.serve.engine import ReportEngine
    from grok.serve.settings import ServeSettings

    torch.manual_seed(cfg.seed)
    if cfg.get("num_threads"):
        torch.set_num_threads(int(cfg.num_threads))
    engine = ReportEngine.from_config(cfg)
    key = api_key or os.environ.get(cfg.api_key_env) or None
    return create_app(engine, ServeSettings.from_config(cfg, key))


def run(cfg: DictConfig, api_key: str | None = None) -> None:
    """Load the export and serve until interrupted."""
    import uvicorn

    app = build_app(cfg, api_key)
    if cfg.host not in LOOPBACK and app.state.settings.api_key is None:
        log.warning("serving on %s without an API key: anyone who can reach it can use it", cfg.host)
    log.info("GROK serving %s on http://%s:%d", cfg.model_dir, cfg.host, cfg.port)
    uvicorn.run(app, host=cfg.host, port=int(cfg.port), log_level=cfg.log_level)


def take_api_key(argv: list[str]) -> tuple[str | None, list[str]]:
    """`--api-key KEY` / `--api-key=KEY` out of `argv` (the key, and argv without it)."""
    key, rest, index = None, [], 0
    while index < len(argv):
        item = argv[index]
        if item == "--api-key":
            if index + 1 >= len(argv):
                raise SystemExit("grok-serve: --api-key needs a value")
            key, index = argv[index + 1], index + 2
            continue
        if item.startswith("--api-key="):
            key = item.split("=", 1)[1]
        else:
            rest.append(item)
        index += 1
    return key, rest


@hydra_entry("serve")
def _serve(cfg: DictConfig) -> None:
    run(cfg, _flag_api_key)


def main() -> None:
    """Console entry point."""
    global _flag_api_key
    _flag_api_key, sys.argv[1:] = take_api_key(sys.argv[1:])
    _serve()


if __name__ == "__main__":
    main()
