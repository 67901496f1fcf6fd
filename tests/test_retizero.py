"""RetiZero's released CLIP state dict -> a plain RetinaViT with the q/v LoRA merged (same features)."""

from __future__ import annotations

import copy

import pytest
import torch

from grok.models.encoders import CheckpointMismatchError, RetinaViT
from grok.models.encoders.retizero import RETIZERO_PREFIX, add_retizero_lora, build_retizero_encoder

ARCH = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 4, "pool": "token"}


def _retizero_file(tmp_path):
    torch.manual_seed(0)
    lora_vit = add_retizero_lora(RetinaViT(**ARCH), rank=8)
    for name, parameter in lora_vit.named_parameters():
        if "linear_" in name:  # trained LoRA factors (RetiZero initialises B at zero; use non-zero to test the merge)
            torch.nn.init.normal_(parameter, std=0.2)
    state = {RETIZERO_PREFIX + key: value for key, value in lora_vit.state_dict().items()}
    state["text_model.embeddings.word_embeddings.weight"] = torch.randn(10, 8)  # the CLIP text tower, dropped
    state["logit_scale"] = torch.tensor(2.0)
    path = tmp_path / "retizero.pth"
    torch.save(state, path)
    return path, lora_vit.eval()


def test_merged_vit_matches_the_unmerged_lora_vit(tmp_path) -> None:
    path, lora_vit = _retizero_file(tmp_path)
    assert any(".attn.qkv.qkv.weight" in key for key in torch.load(path, weights_only=True))
    merged = build_retizero_encoder(architecture=ARCH, checkpoint=str(path)).eval()
    assert isinstance(merged.blocks[0].attn.qkv, torch.nn.Linear)
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        reference, ours = lora_vit.encode(images), merged.encode(images)
        plain = copy.deepcopy(merged)
        plain.load_state_dict(
            {k.replace(".qkv.qkv.", ".qkv."): v for k, v in lora_vit.state_dict().items() if "linear_" not in k}
        )
        unmerged_base = plain.encode(images)
    torch.testing.assert_close(ours.pooled, reference.pooled, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ours.patch_tokens, reference.patch_tokens, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(unmerged_base.pooled, reference.pooled, atol=1e-3)  # the LoRA factors matter
    # the CLS token after the final norm is the pooled feature
    torch.testing.assert_close(ours.pooled, merged.forward_features(images)[:, 0])


def test_a_file_without_the_vision_prefix_is_refused(tmp_path) -> None:
    path = tmp_path / "other.pth"
    torch.save({"visual.blocks.0.attn.qkv.weight": torch.zeros(3)}, path)
    with pytest.raises(CheckpointMismatchError, match=r"vision_model\.model\.lora_vit"):
        build_retizero_encoder(architecture=ARCH, checkpoint=str(path))
