"""Files a user is handed cannot run code (checkpoints, export configs); a torn feature cache is rebuilt."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from grok.models.encoders.checkpoints import CheckpointReadError, PickledCheckpointError
from grok.utils.errors import InputError
from grok.utils.train import checkpoint_state_dict, local_checkpoint_path


class _Payload:
    """Unpickling this object would create a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_checkpoint_holding_a_pickled_payload_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    crafted = tmp_path / "best.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "extra": _Payload(marker)}, crafted, pickle_protocol=2)
    with pytest.raises(PickledCheckpointError, match="refused"):
        checkpoint_state_dict(str(crafted))
    assert not marker.exists()
    plain = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "epoch": 3, "callbacks": {"best": "x.ckpt"}}, plain)
    assert torch.equal(checkpoint_state_dict(str(plain))["w"], torch.ones(2))  # our own checkpoints still load


def test_remote_checkpoint_paths_are_refused_and_local_ones_checked_before_lightning_reads_them(tmp_path) -> None:
    for url in ("https://example.org/last.ckpt", "s3://bucket/last.ckpt"):
        with pytest.raises(InputError, match="remote checkpoints are refused"):
            local_checkpoint_path(url)
    last = tmp_path / "last.ckpt"
    torch.save({"state_dict": {"w": torch.ones(1)}}, last)
    assert local_checkpoint_path(str(last)) == str(last) and local_checkpoint_path(None) is None
    last.write_bytes(last.read_bytes()[:40])  # a checkpoint torn by a full disk
    with pytest.raises(CheckpointReadError, match=r"last\.ckpt"):
        local_checkpoint_path(str(last))


def test_an_export_config_naming_a_foreign_target_is_refused_before_anything_is_built(tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    from grok.mllm.export import CONFIG_FILE, check_export_targets, load_exported_mllm

    marker = tmp_path / "copied"
    crafted = {
        "model": {"_target_": "grok.mllm.module.InstructModule", "optimizer": {"_target_": "torch.optim.AdamW"}},
        "export": {"hook": {"_target_": "shutil.copyfile", "src": __file__, "dst": str(marker)}},
    }
    export = tmp_path / "export"
    export.mkdir()
    OmegaConf.save(OmegaConf.create(crafted), export / CONFIG_FILE)
    with pytest.raises(ValueError, match=r"export\.hook\._target_='shutil.copyfile' is not allowed"):
        load_exported_mllm(export)
    assert not marker.exists()
    check_export_targets({"scheduler": {"_target_": "transformers.get_cosine_schedule_with_warmup"}}, "ok.yaml")


def test_a_torn_feature_cache_is_rebuilt_and_the_cache_is_written_atomically(tmp_path: Path) -> None:
    from grok.mllm.feature_cache import cached_features

    cache = tmp_path / "oct-abc.safetensors"
    cache.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{trunc")  # what a killed write leaves behind
    calls = []

    def encode(pixels: torch.Tensor) -> torch.Tensor:
        calls.append(len(pixels))
        return pixels.mean(dim=(1, 2, 3))[:, None, None].expand(-1, 2, 3).clone()

    images = {"a.png": tmp_path / "a.png", "b.png": tmp_path / "b.png"}
    load = {"a.png": torch.zeros(3, 4, 4), "b.png": torch.ones(3, 4, 4)}.__getitem__
    features = cached_features(encode, images, load, cache)
    assert calls == [2] and torch.equal(features["b.png"], torch.ones(2, 3))
    assert not cache.with_name(cache.name + ".partial").exists()
    again = cached_features(encode, images, load, cache)  # now read back, nothing encoded
    assert calls == [2] and torch.equal(again["a.png"], torch.zeros(2, 3))
