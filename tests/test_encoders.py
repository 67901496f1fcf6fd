"""RetinaViT and its checkpoint loaders: each format saved from a tiny model in the real layout and loaded back."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from grok.models.encoders import (
    CheckpointMismatchError,
    PickledCheckpointError,
    RetinaViT,
    build_encoder,
    export_encoder,
    load_checkpoint,
    load_exported_encoder,
    read_export_config,
)

TINY = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 4}
TINY_DINO = {**TINY, "img_size": 28, "patch_size": 7, "init_values": 1e-5, "pool": "token"}


def _tiny(seed: int, **overrides) -> RetinaViT:
    torch.manual_seed(seed)
    model = RetinaViT(**{**TINY, **overrides}).eval()
    for parameter in model.parameters():  # randomise norms/tokens too, so a skipped key would show
        parameter.data.normal_(0, 0.2)
    return model


def _images(size: int = 32) -> torch.Tensor:
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))


def _assert_same_outputs(a: RetinaViT, b: RetinaViT, size: int = 32) -> None:
    with torch.no_grad():
        out_a, out_b = a.encode(_images(size)), b.encode(_images(size))
    torch.testing.assert_close(out_a.patch_tokens, out_b.patch_tokens)
    torch.testing.assert_close(out_a.pooled, out_b.pooled)


def _mae_checkpoint(source: RetinaViT) -> dict:
    """A whole MAE model's state dict as RETFound saves it: encoder (with its final `norm`, no fc_norm) + decoder."""
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("fc_norm.")}
    state["norm.weight"], state["norm.bias"] = torch.ones(TINY["embed_dim"]), torch.zeros(TINY["embed_dim"])
    state["mask_token"] = torch.zeros(1, 1, 16)
    state["decoder_embed.weight"] = torch.randn(16, TINY["embed_dim"])
    state["decoder_pos_embed"] = torch.randn(1, 17, 16)
    state["decoder_blocks.0.attn.qkv.weight"] = torch.randn(48, 16)
    state["decoder_norm.weight"] = torch.ones(16)
    state["decoder_pred.weight"] = torch.randn(8 * 8 * 3, 16)
    state["head.weight"] = torch.randn(1000, TINY["embed_dim"])  # an ImageNet head that does not fit
    return {"model": state}


def test_encode_returns_patch_tokens_without_cls_and_pooled() -> None:
    model = _tiny(0)
    output = model.encode(_images())
    assert output.patch_tokens.shape == (2, model.num_patches, 32) and model.num_patches == 16
    assert output.pooled.shape == (2, model.embed_dim)
    torch.testing.assert_close(output.pooled, model.fc_norm(output.patch_tokens.mean(dim=1)))


def test_retfound_mae_checkpoint_loads_and_reproduces_outputs(tmp_path: Path) -> None:
    source = _tiny(0)
    source.fc_norm.reset_parameters()  # fc_norm is absent from MAE files: the loaded model starts it fresh
    path = tmp_path / "RETFound_mae.pth"
    torch.save(_mae_checkpoint(source), path)
    target = _tiny(1)
    target.fc_norm.reset_parameters()
    report = load_checkpoint(target, path, "retfound_mae")
    _assert_same_outputs(source, target)
    assert "mask_token" in report.dropped and "decoder_pred.weight" in report.dropped
    assert {"head.weight", "norm.weight"} <= set(report.dropped)
    assert report.fresh == ["fc_norm.weight", "fc_norm.bias"] and not report.missing


def test_retfound_mae_position_embeddings_are_resampled_for_another_input_size(tmp_path: Path) -> None:
    path = tmp_path / "RETFound_mae.pth"
    torch.save(_mae_checkpoint(_tiny(0)), path)
    larger = RetinaViT(**{**TINY, "img_size": 48})
    report = load_checkpoint(larger, path, "retfound_mae")
    assert report.resized == ["pos_embed"] and larger.pos_embed.shape == (1, 1 + 36, 32)
    assert larger.encode(_images(48)).patch_tokens.shape == (2, 36, 32)


def test_retfound_dinov2_teacher_checkpoint_loads_and_reproduces_outputs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = RetinaViT(**TINY_DINO).eval()
    teacher = {f"backbone.{k}": v for k, v in source.state_dict().items()}
    teacher["backbone.mask_token"] = torch.zeros(1, 32)
    teacher["dino_head.mlp.0.weight"] = torch.randn(64, 32)
    teacher["ibot_head.last_layer.weight_g"] = torch.randn(1, 64)
    path = tmp_path / "RETFound_dinov2.pth"
    torch.save({"teacher": teacher, "student": {}}, path)
    target = RetinaViT(**TINY_DINO).eval()
    report = load_checkpoint(target, path, "retfound_dinov2")
    _assert_same_outputs(source, target, size=28)
    assert {"backbone.mask_token", "dino_head.mlp.0.weight", "ibot_head.last_layer.weight_g"} <= set(report.dropped)


def test_mismatched_checkpoint_fails_loudly(tmp_path: Path) -> None:
    path = tmp_path / "RETFound_mae.pth"
    torch.save(_mae_checkpoint(_tiny(0)), path)
    with pytest.raises(CheckpointMismatchError, match="missing"):  # a deeper model: blocks.2 absent from the file
        load_checkpoint(RetinaViT(**{**TINY, "depth": 3}), path, "retfound_mae")
    with pytest.raises(CheckpointMismatchError, match="wrong shape"):
        load_checkpoint(RetinaViT(**{**TINY, "embed_dim": 48, "num_heads": 4}), path, "retfound_mae")
    with pytest.raises(CheckpointMismatchError, match="unexpected"):  # layer scale in the file, not in the model
        source = RetinaViT(**{**TINY, "init_values": 1e-5})
        torch.save({"model": source.state_dict()}, path)
        load_checkpoint(RetinaViT(**TINY), path, "retfound_mae")
    with pytest.raises(CheckpointMismatchError, match="teacher"):
        load_checkpoint(RetinaViT(**TINY), path, "retfound_dinov2")


def test_pickled_checkpoints_are_refused_unless_trusted(tmp_path: Path) -> None:
    checkpoint = _mae_checkpoint(_tiny(0))
    checkpoint["args"] = argparse.Namespace(model="RETFound_mae")  # as training scripts save them
    path = tmp_path / "legacy.pth"
    torch.save(checkpoint, path)
    with pytest.raises(PickledCheckpointError, match="trust_pickle"):
        load_checkpoint(RetinaViT(**TINY), path, "retfound_mae")
    assert load_checkpoint(RetinaViT(**TINY), path, "retfound_mae", trust_pickle=True).loaded > 0


def test_export_round_trip_keeps_outputs_and_transform(tmp_path: Path) -> None:
    source = _tiny(0, pool="token", init_values=1e-4)
    path = export_encoder(source, tmp_path / "align" / "oct_encoder.safetensors", {"family": "tiny", "image_size": 32})
    config = read_export_config(path)
    assert config["architecture"]["pool"] == "token" and config["transform"]["image_size"] == 32
    loaded = load_exported_encoder(path).eval()
    _assert_same_outputs(source, loaded)
    assert loaded.transform_config == {"family": "tiny", "image_size": 32}
    rebuilt = build_encoder(checkpoint=str(path), checkpoint_format="exported")
    _assert_same_outputs(source, rebuilt.eval())


def test_init_seed_makes_random_initialisation_independent_of_prior_rng_use() -> None:
    first = build_encoder(architecture=TINY, init_seed=3)
    torch.randn(1000)  # e.g. another component built in between
    second = build_encoder(architecture=TINY, init_seed=3)
    torch.testing.assert_close(first.state_dict(), second.state_dict())
