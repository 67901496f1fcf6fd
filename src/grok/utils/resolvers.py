"""GROK's OmegaConf resolvers (`${grok.<name>:...}` in conf/), registered when grok.utils.config is imported."""

from __future__ import annotations

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf


def sweep_group(default: str) -> str:
    """A sweep job's group on a dashboard: its multirun folder (shared by every job of the sweep); else `default`."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return default
    return str(HydraConfig.get().sweep.dir)


def job_name(default: str) -> str:
    """A job's run name on a dashboard: its command-line overrides (`loss.temperature=0.1,...`), else `default`."""
    if not HydraConfig.initialized():
        return default
    return HydraConfig.get().job.override_dirname or default


def packaged_gguf(distribution: str, filename: str) -> str:
    """The cached transformers folder of a GGUF model shipped in a Python package (converted on first use)."""
    from grok.mllm.gguf import packaged_gguf_folder

    return packaged_gguf_folder(distribution, filename)


def register_resolvers() -> None:
    """Register every `grok.*` resolver (idempotent)."""
    OmegaConf.register_new_resolver("grok.sweep_group", sweep_group, replace=True)
    OmegaConf.register_new_resolver("grok.job_name", job_name, replace=True)
    OmegaConf.register_new_resolver("grok.packaged_gguf", packaged_gguf, replace=True, use_cache=True)
