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
IMPORT_ONLY = {"hardware", "experiment", "hparams_search", "hydra", "paths"}
# Groups whose options are named <top-level config>_<name> (align_paper, mllm_optuna) and apply to the whole config.
GLOBAL_GROUPS = {"experiment", "hparams_search"}


def _defaults(config_name: str) -> list:
    return yaml.safe_load((CONF / f"{config_name}.yaml").read_text()).get("defaults", [])


def _selections(config_name: str) -> list[tuple[str, str, str]]:
    """(group, package, option) for each group a top-level config selects, e.g. ('encoder', 'cfp_encoder', ...)."""
    selections = []
    for entry in _defaults(config_name):
        if isinstance(entry, dict):
            for key, value in entry.items():
                group, _, package = key.removeprefix("override ").strip().partition("@")
                selections.append((group, package or group, value))
    return selections


def _groups_of(config_name: str) -> dict[str, str]:
    return {group: option for group, _, option in _selections(config_name)}


def _cases() -> list[tuple[str, str, str, str]]:
    cases = []
    for group_dir in sorted(p for p in CONF.iterdir() if p.is_dir()):
        group = group_dir.name
        hosts = [name for name in TOP_LEVEL if group in _groups_of(name)]
        if not hosts:
            continue
        for option in sorted(p.stem for p in group_dir.glob("*.yaml")):
            # prefer the top-level config (and package) that selects this very option: data/instruct belongs to
            # mllm, encoder/tiny_cfp to mllm's cfp_encoder
            chosen = [(name, pkg) for name in hosts for g, pkg, o in _selections(name) if g == group and o == option]
            host, package = chosen[0] if chosen else (hosts[0], group)
            if group in GLOBAL_GROUPS:
                host = option.split("_")[0]
            cases.append((host, group, package, option))
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


@pytest.mark.parametrize(("host", "group", "package", "option"), _cases())
def test_every_group_option_instantiates(host: str, group: str, package: str, option: str, tmp_path: Path) -> None:
    overrides = [f"{group}={option}" if package == group else f"{group}@{package}={option}"]
    if group in GLOBAL_GROUPS:
        overrides = [f"{group}={option}" if group in _groups_of(host) else f"+{group}={option}"]
    cfg = compose_config(host, tmp_path, overrides)
    node = cfg.get(package) if package in cfg else cfg
    for where, target in _targets(node, package):
        hydra.utils.get_object(target._target_)  # the target imports
        if group in IMPORT_ONLY or _has_missing(target):
            continue
        instance = hydra.utils.instantiate(target)
        assert instance is not None, f"{host}:{group}={option} at {where}"


def test_no_group_option_overrides_another_group() -> None:
    # the file that names a value holds the value in force: only experiment/ files (diffs of the defaults) override
    offenders = []
    for path in sorted(CONF.glob("*/**/*.yaml")):
        group = path.relative_to(CONF).parts[0]
        if group == "experiment":
            continue
        for entry in (yaml.safe_load(path.read_text()) or {}).get("defaults", []) or []:
            keys = entry.keys() if isinstance(entry, dict) else [entry]
            # choosing Hydra's own sweeper or launcher (hparams_search/) is not an override of one of our values
            offenders += [
                f"{path.relative_to(CONF)}: {key}"
                for key in keys
                if str(key).startswith("override ") and not str(key).startswith("override /hydra/")
            ]
    assert not offenders, offenders


@pytest.mark.parametrize(
    ("override", "new"),
    [
        ("lora=full", "adaptation=full"),
        ("lora.r=4", "adaptation.r"),
        ("+lora.full_finetune=true", "adaptation.mode"),
        ("model.learning_rates.lora=1e-3", "model.learning_rates.language_model"),
        ("torch_num_threads=2", "num_threads"),
        ("model.warmup_fraction=0.1", "model.warmup_ratio"),
    ],
)
def test_renamed_keys_fail_naming_the_new_key(override: str, new: str, monkeypatch, capsys) -> None:
    from grok.cli.train_mllm import main
    from grok.utils.config import RenamedKeyError, check_overrides

    with pytest.raises(RenamedKeyError, match=new.split("=")[0].replace(".", r"\.")):
        check_overrides([override])
    monkeypatch.setattr("sys.argv", ["grok-train-mllm", override])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2  # bad input: one line on stderr naming the new key
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("grok-train-mllm: error: ") and f"use {new.split('=')[0]}" in line


def test_a_config_file_with_a_renamed_key_fails_naming_the_new_key(tmp_path: Path) -> None:
    from grok.utils.config import RenamedKeyError, check_config

    check_config(compose_config("mllm", tmp_path))  # today's keys pass
    cfg = compose_config("mllm", tmp_path, ["+lora={r: 8}"])  # e.g. an old experiment file of the user's
    with pytest.raises(RenamedKeyError, match="use adaptation"):
        check_config(cfg)
    from hydra.errors import InstantiationException

    with pytest.raises(InstantiationException, match=r"renamed model\.learning_rates\.language_model"):
        hydra.utils.instantiate(compose_config("mllm", tmp_path, ["+model.learning_rates.lora=1e-3"]).model)
