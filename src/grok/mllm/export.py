"""Export of a trained GROK MLLM: a plain-peft adapter (or the fully fine-tuned language model), projector/fusion
weights, the vocabulary map, the config.

Layout of the export folder:
  adapter/                 LoRA adapter (`PeftModel.from_pretrained(base, "<dir>/adapter")`)
  base_model/              the frozen base Qwen2 in transformers format, only when it was randomly initialised
  language_model/          instead of both: the fully fine-tuned Qwen2 (`adaptation=full`) in transformers format (its
                           embedding rows follow vocab_map.json when the vocabulary is trimmed)
  fusion.safetensors       projector/fusion weights (keys of `GrokMLLM.fusion`)
  trainable.safetensors    every trainable parameter + the vocabulary map (what grok-infer loads)
  vocab_map.json           kept real Qwen2 ids (trimmed vocabulary only)
  quantity_tokens.json     grounding only: the quantity tokens (in tokenizer order)
  quantity_statistics.json grounding only: per-quantity training mean/std (standardises values)
  knowledge_base.yaml      grounding only: the knowledge base the model was trained under (ranges, rendering)
  mllm_config.yaml         the resolved training config (model, data, generation) to rebuild the model
  merged/                  optional: base + LoRA merged into one transformers model folder
"""

from __future__ import annotations

import copy
import logging
import math
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hydra
import yaml
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from safetensors.torch import save_file

from grok.grounding.symbols import QuantityTokens
from grok.mllm.build import frozen_checksum
from grok.mllm.module import InstructModule
from grok.models.encoders.checkpoints import CheckpointMismatchError, read_safetensors, safetensors_metadata
from grok.utils.errors import InputError, is_bad_input, unwrapped
from grok.utils.json_files import read_json_file

log = logging.getLogger(__name__)
CONFIG_FILE = "mllm_config.yaml"
LAYOUT_FOLDERS = ("adapter", "base_model", "language_model", "merged")
GROUNDING_FILES = ("quantity_tokens.json", "quantity_statistics.json", "knowledge_base.yaml")
WEIGHTS_FILE = "trainable.safetensors"
JSON_FILES = ("vocab_map.json", "quantity_tokens.json", "quantity_statistics.json")


class ExportError(InputError):
    """An MLLM export folder is incomplete or malformed; the message names the file and what was expected."""


class ExportTargetError(ExportError):
    """An export config names a `_target_` outside the allowlist (it would run code of the file's choosing)."""


class ExportWeightsError(ExportError, CheckpointMismatchError):
    """An export's trained weights do not fit the model its config rebuilds (missing, unexpected or changed)."""


def export_mllm(module: InstructModule, directory: str | Path, cfg: DictConfig, merge: bool = False) -> Path:
    """Write the export folder for `module` trained with config `cfg`; return the folder."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in LAYOUT_FOLDERS:  # a previous export with another adaptation must not be left beside this one
        shutil.rmtree(directory / stale, ignore_errors=True)
    model = module.model
    adapted = hasattr(model.language_model, "peft_config")
    if adapted:
        model.language_model.save_pretrained(str(directory / "adapter"))
    if not adapted and any(p.requires_grad for p in model.language_model.parameters()):  # adaptation=full
        model.language_model.save_pretrained(str(directory / "language_model"))
    elif not cfg.llm.get("pretrained_path"):  # a random base cannot be re-downloaded: ship it for plain peft
        base = copy.deepcopy(model.language_model)
        base = base.unload() if hasattr(base, "unload") else base
        base.save_pretrained(str(directory / "base_model"))
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in model.fusion.state_dict().items()},
        directory / "fusion.safetensors",
    )
    # clone: tied weights (a shared embedding/output table) are one tensor under two keys, which safetensors refuses
    trainable = {k: v.detach().cpu().contiguous().clone() for k, v in module.trainable_state_dict().items()}
    save_file(
        trainable, directory / "trainable.safetensors", metadata={"frozen_checksum": repr(frozen_checksum(model))}
    )
    if model.vocabulary is not None:
        model.vocabulary.save(directory / "vocab_map.json")
    parts = module.grounding_parts
    for stale in GROUNDING_FILES:
        (directory / stale).unlink(missing_ok=True)
    if parts is not None:
        parts.tokens.save(directory / "quantity_tokens.json")
        parts.statistics.save(directory / "quantity_statistics.json", parts.tokens)
        shutil.copyfile(parts.conversation.kb.path, directory / "knowledge_base.yaml")
    saved = {key: _resolved(cfg, key) for key in ("model", "data", "generation", "system_prompt") if key in cfg}
    OmegaConf.save(OmegaConf.create(saved), directory / CONFIG_FILE)
    if merge and hasattr(model.language_model, "merge_and_unload"):
        merged = copy.deepcopy(model.language_model).merge_and_unload()
        merged.save_pretrained(str(directory / "merged"))
    elif merge:
        log.info("export.merge: no adapter to merge; %s/language_model (if any) is the full model", directory)
    log.info("exported the GROK MLLM to %s", directory)
    return directory


def _resolved(cfg: DictConfig, key: str) -> Any:
    node = cfg[key]
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


# What an export's mllm_config.yaml may instantiate: GROK's own code and the optimiser/schedule factories GROK uses.
# An export is data a user may be handed; any other `_target_` would run code of the file's choosing.
EXPORT_TARGET_PREFIXES = ("grok.", "torch.optim.")
EXPORT_TARGETS = frozenset(
    {
        "transformers.get_cosine_schedule_with_warmup",
        "transformers.get_linear_schedule_with_warmup",
        "transformers.get_constant_schedule_with_warmup",
    }
)


def check_export_targets(cfg: Any, source: Path | str) -> None:
    """Refuse an export config whose `_target_`s leave the allowlist (naming the key and the target)."""

    def walk(node: Any, path: str) -> None:
        if isinstance(node, Mapping):
            target = node.get("_target_")
            if target is not None and not (
                str(target).startswith(EXPORT_TARGET_PREFIXES) or str(target) in EXPORT_TARGETS
            ):
                raise ExportTargetError(
                    f"{source}: {path or '<root>'}._target_={target!r} is not allowed in an export config (allowed: "
                    f"{', '.join(EXPORT_TARGET_PREFIXES)}* and {', '.join(sorted(EXPORT_TARGETS))})"
                )
            for key, value in node.items():
                walk(value, f"{path}.{key}" if path else str(key))
        elif isinstance(node, (list, tuple)):
            for index, value in enumerate(node):
                walk(value, f"{path}[{index}]")

    walk(OmegaConf.to_container(cfg, resolve=False) if OmegaConf.is_config(cfg) else cfg, "")


def read_export_config(directory: Path) -> DictConfig:
    """The export's `mllm_config.yaml`: a mapping with `model` and `data` nodes, its `_target_`s allowlisted."""
    config_file = directory / CONFIG_FILE
    if directory.is_file():
        raise ExportError(f"{directory}: is a file; model_dir must be the export folder grok-train-mllm writes")
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file} not found: is {directory} a GROK MLLM export? Run `make train-mllm`")
    try:
        cfg = OmegaConf.load(config_file)
    except (yaml.YAMLError, OmegaConfBaseException, UnicodeDecodeError) as error:
        detail = " ".join(str(error).split())[:200]
        raise ExportError(f"{config_file}: not a valid YAML config ({detail})") from error
    check_export_targets(cfg, config_file)
    if not isinstance(cfg, DictConfig) or not all(isinstance(cfg.get(key), DictConfig) for key in ("model", "data")):
        raise ExportError(
            f"{config_file}: expected a mapping with 'model' and 'data' nodes (what grok-train-mllm saves)"
        )
    return cfg


def _check_json_files(directory: Path) -> None:
    """Refuse an export whose JSON side files (vocabulary map, quantity tokens and statistics) are not JSON."""
    for name in JSON_FILES:
        path = directory / name
        if not path.is_file():
            continue
        read_json_file(path, ExportError, "the file grok-train-mllm wrote")


def _instantiate_module(cfg: DictConfig) -> InstructModule:
    """The InstructModule of the export's `model` node (bad input met while building it is raised as itself)."""
    try:
        return hydra.utils.instantiate(cfg.model)
    except InstantiationException as error:
        if is_bad_input(error):
            raise unwrapped(error) from error
        raise


def _load_trained_weights(module: InstructModule, weights_file: Path) -> None:
    """Load the export's trained weights; any trainable weight missing from the file, or any tensor the rebuilt
    model does not have, is refused with the names."""
    state = read_safetensors(weights_file, what="trained MLLM weights")
    expected = set(module.trainable_state_dict())
    unexpected = sorted(set(state) - set(module.state_dict()))
    missing = sorted(expected - set(state))
    if unexpected:
        raise ExportWeightsError(
            f"{weights_file}: {len(unexpected)} tensor(s) not in the model rebuilt from {CONFIG_FILE} "
            f"(e.g. {', '.join(unexpected[:5])}); the export's weights and config do not belong together"
        )
    if missing:
        raise ExportWeightsError(
            f"{weights_file}: lacks {len(missing)} trainable weight(s) of the model rebuilt from {CONFIG_FILE} (e.g. "
            f"{', '.join(missing[:5])}); the export is incomplete or from another adaptation/architecture"
        )
    model_state = module.state_dict()
    wrong = [
        f"{k} {tuple(v.shape)} vs {tuple(model_state[k].shape)}"
        for k, v in state.items()
        if v.shape != model_state[k].shape
    ]
    if wrong:
        raise ExportWeightsError(f"{weights_file}: {len(wrong)} tensor(s) of the wrong shape (e.g. {wrong[0]})")
    module.load_state_dict(state, strict=False)


def load_exported_mllm(
    directory: str | Path, overrides: dict[str, Any] | None = None
) -> tuple[InstructModule, DictConfig]:
    """Rebuild the InstructModule from an export folder and load its trained weights (frozen ones are checked)."""
    directory = Path(directory)
    config_file = directory / CONFIG_FILE
    cfg = read_export_config(directory)
    weights_file = directory / WEIGHTS_FILE
    metadata = safetensors_metadata(weights_file, what="trained MLLM weights")  # before the (slow) model build
    _check_json_files(directory)
    if (directory / "vocab_map.json").is_file():
        cfg.model.vocabulary = {"trim": True, "map_file": str(directory / "vocab_map.json")}
    if (directory / "knowledge_base.yaml").is_file():  # grounding: the export's own KB and statistics
        kb = {"version": None, "path": str(directory / "knowledge_base.yaml")}
        for node in (cfg.model.grounding, cfg.model.tokenizer.extra_tokens.grounding, cfg.data.get("grounding")):
            if node is not None:
                node.knowledge_base = kb
        cfg.model.grounding_statistics = str(directory / "quantity_statistics.json")
    for key, value in (overrides or {}).items():
        OmegaConf.update(cfg, key, value, merge=True)
    module = _instantiate_module(cfg)
    _load_trained_weights(module, weights_file)
    try:
        expected = float(metadata.get("frozen_checksum", "nan"))
    except ValueError as error:
        raise ExportError(
            f"{weights_file}: metadata frozen_checksum={metadata['frozen_checksum']!r} is not a number"
        ) from error
    actual = frozen_checksum(module.model)
    if not math.isnan(expected) and not math.isclose(expected, actual, rel_tol=1e-6):
        raise ExportWeightsError(
            f"{directory}: frozen weights rebuilt from {config_file} (checksum {actual:.6g}) differ from training "
            f"({expected:.6g}); check llm.pretrained_path, the encoder exports and model.init_seed"
        )
    if module.grounding_parts is not None and (directory / "quantity_tokens.json").is_file():
        saved = QuantityTokens.load(directory / "quantity_tokens.json")
        if saved != module.grounding_parts.tokens:
            raise ExportError(
                f"{directory}: the quantity tokens rebuilt from knowledge_base.yaml differ from those saved"
            )
    module.eval()
    return module, cfg
