"""Every config in every group composes, and every object it declares instantiates."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf

from grok.utils.config import config_dir
from helpers import compose_config

CONF = config_dir()
TOP_LEVEL = sorted(path.stem for path in CONF.glob("*.yaml"))
# Groups whose options configure something other than objects (or whose objects need a GPU or a real checkpoint):
# for these, composing and checking that each `_target_` imports is the test.
IMPORT_ONLY = {"hardware", "experiment", "hydra", "paths"}


def _defaults(config_name: str) -> list:
    return yaml.safe_load((CONF / f"{config_name}.yaml").read_text()).get("defaults", [])


def _groups_of(config_name: str) -> dict[str, str]:
    groups = {}
    for entry in _defaults(config_name):
        if isinstance(entry, dict):
            for key, value in entry.items():
                group = key.split("@")[0].removeprefix("override ").strip()
                groups[group] = value
    return groups


def _cases() -> list[tuple[str, str, str]]:
    cases = []
    for group_dir in sorted(p for p in CONF.iterdir() if p.is_dir()):
        group = group_dir.name
        hosts = [name for name in TOP_LEVEL if group in _groups_of(name)]
        if not hosts:
            continue
        for option in sorted(p.stem for p in group_dir.glob("*.yaml")):
            cases.append((hosts[0], group, option))
    return cases


def _targets(node, path="") -> list[tuple[str, DictConfig]]:
    found = []
    if isinstance(node, DictConfig):
        if "_target_" in node:
            found.append((path, node))
        for key in node:
            found += _targets(node.get(key), f"{path}.{key}")
    elif isinstance(node, ListConfig):
        for index, item in enumerate(node):
            found += _targets(item, f"{path}[{index}]")
    return found


def _has_missing(node: DictConfig) -> bool:
    container = OmegaConf.to_container(node, resolve=False)
    return "???" in yaml.safe_dump(container)


@pytest.mark.parametrize("config_name", TOP_LEVEL)
def test_top_level_config_composes_and_resolves(config_name: str, tmp_path: Path) -> None:
    cfg = compose_config(config_name, tmp_path)
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)  # every interpolation resolves
    assert cfg.task_name


@pytest.mark.parametrize(("host", "group", "option"), _cases())
def test_every_group_option_instantiates(host: str, group: str, option: str, tmp_path: Path) -> None:
    overrides = [f"{group}={option}"]
    if group == "experiment":  # experiments are named <top-level config>_<name>, e.g. align_paper
        host = option.split("_")[0]
        overrides = [f"experiment={option}" if "experiment" in _groups_of(host) else f"+experiment={option}"]
    cfg = compose_config(host, tmp_path, overrides)
    node = cfg.get(group) if group in cfg else cfg
    for where, target in _targets(node, group):
        hydra.utils.get_object(target._target_)  # the target imports
        if group in IMPORT_ONLY or _has_missing(target):
            continue
        instance = hydra.utils.instantiate(target)
        assert instance is not None, f"{host}:{group}={option} at {where}"
