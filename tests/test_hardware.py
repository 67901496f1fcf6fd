"""The hardware/ group's DeepSpeed options (ZeRO-2, ZeRO-3) and the demo's routing of overrides to its stages."""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path

import hydra
import pytest
from lightning.pytorch.strategies import DeepSpeedStrategy
from omegaconf import OmegaConf

from grok.demo import CONFIG_OF, STAGES, route_overrides
from helpers import compose_config

DEEPSPEED = importlib.util.find_spec("deepspeed") is not None


@pytest.mark.parametrize(("option", "stage"), [("deepspeed", 2), ("deepspeed_zero3", 3)])
@pytest.mark.parametrize("host", ["mllm", "align"])
def test_deepspeed_options_compose_into_lightnings_strategy(host: str, option: str, stage: int, tmp_path: Path):
    cfg = compose_config(host, tmp_path, [f"hardware={option}", "hardware.num_nodes=2"])
    trainer = OmegaConf.to_container(cfg.trainer, resolve=True)
    strategy = trainer["strategy"]
    assert hydra.utils.get_class(strategy["_target_"]) is DeepSpeedStrategy
    assert strategy["stage"] == stage and trainer["precision"] == "bf16-mixed" and trainer["num_nodes"] == 2
    # every key the config sets is one of the strategy's parameters (a typo would only fail on the cluster)
    parameters = inspect.signature(DeepSpeedStrategy.__init__).parameters
    assert set(strategy) - {"_target_"} <= set(parameters), set(strategy) - set(parameters)


@pytest.mark.skipif(DEEPSPEED, reason="deepspeed is installed: the strategy builds")
def test_deepspeed_option_without_deepspeed_fails_naming_it(tmp_path: Path):
    cfg = compose_config("mllm", tmp_path, ["hardware=deepspeed"])
    with pytest.raises(Exception, match=r"(?i)deepspeed"):
        hydra.utils.instantiate(cfg.hardware.strategy)


@pytest.mark.skipif(not DEEPSPEED, reason="deepspeed is not installed (pip install 'grok-eye[deepspeed]')")
@pytest.mark.parametrize(("option", "stage"), [("deepspeed", 2), ("deepspeed_zero3", 3)])
def test_deepspeed_strategy_instantiates(option: str, stage: int, tmp_path: Path):
    cfg = compose_config("mllm", tmp_path, [f"hardware={option}"])
    strategy = hydra.utils.instantiate(cfg.hardware.strategy)
    assert isinstance(strategy, DeepSpeedStrategy) and strategy.config["zero_optimization"]["stage"] == stage


def test_demo_routes_each_override_to_the_stages_that_have_it():
    stages = sorted(CONFIG_OF)
    assert {name for name, _, _ in STAGES} == set(stages)
    routed = route_overrides(
        ["paths.root_dir=/tmp/x", "llm=smollm2_135m", "hardware=gpu", "n_subjects=35", "device=cuda",
         "encoder@cfp_encoder=tiny_cfp", "encoder=tiny_vit", "+extra=1"],
        stages,
    )  # fmt: skip
    everywhere = ["paths.root_dir=/tmp/x"]
    assert routed["grok-synth"] == [*everywhere, "n_subjects=35", "+extra=1"]
    assert routed["grok-eval"] == [*everywhere, "+extra=1"]
    assert routed["grok-train-align"] == [*everywhere, "hardware=gpu", "encoder=tiny_vit", "+extra=1"]
    assert routed["grok-train-mllm"] == [
        *everywhere, "llm=smollm2_135m", "hardware=gpu", "encoder@cfp_encoder=tiny_cfp", "+extra=1",
    ]  # fmt: skip
    assert routed["grok-infer"] == [*everywhere, "hardware=gpu", "device=cuda", "+extra=1"]


def test_demo_refuses_an_override_no_stage_has():
    with pytest.raises(SystemExit, match=r"trainer\.max_epoch=1.*no stage"):
        route_overrides(["trainer.max_epoch=1"], sorted(CONFIG_OF))
