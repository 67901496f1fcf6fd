"""Alignment parts: retrieval metrics, probes, fine-tuning modes, LoRA merge, layer decay, collapse warning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from grok.align.finetune import apply_finetune_mode, layer_decay_groups, merged_encoder
from grok.align.heads import ProjectionHead
from grok.align.loss import ContrastiveLoss
from grok.align.metrics import linear_probe, recall_at_k, retrieval_metrics
from grok.align.module import AlignModule
from grok.models.encoders import RetinaViT
from grok.models.tabular import BiomarkerEncoder

TINY = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 3, "num_heads": 4}


def test_recall_at_k_counts_the_true_pair_rank() -> None:
    similarity = torch.eye(4)
    similarity[1] = torch.tensor([0.9, 0.5, 0.1, 0.0])  # row 1's pair ranks second
    assert recall_at_k(similarity, (1, 2)) == {1: 0.75, 2: 1.0}
    metrics = retrieval_metrics(torch.randn(50, 8), torch.randn(50, 8))
    assert metrics["chance_recall@1"] == pytest.approx(0.02) and -1 <= metrics["pair_cosine"] <= 1


def test_linear_probe_finds_signal_and_not_noise() -> None:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(300, 8))
    labels = (features[:, :1] > 0).astype(float)
    targets = features[:, 1:2] * 3 + 0.1 * rng.normal(size=(300, 1))
    informative = linear_probe(
        features[:200], labels[:200], targets[:200], features[200:], labels[200:], targets[200:], ["thickness"]
    )
    noise = rng.normal(size=(300, 8))
    uninformative = linear_probe(
        noise[:200], labels[:200], targets[:200], noise[200:], labels[200:], targets[200:], ["thickness"]
    )
    assert informative["probe_dx_auroc"] > 0.95 and informative["probe_r2"] > 0.9
    assert uninformative["probe_dx_auroc"] < 0.7 and uninformative["probe_r2"] < 0.1


def test_last_n_blocks_and_frozen_modes() -> None:
    encoder = apply_finetune_mode(RetinaViT(**TINY), {"mode": "last_n", "last_n_blocks": 1})
    trainable = {name for name, p in encoder.named_parameters() if p.requires_grad}
    assert (
        all(name.startswith(("blocks.2.", "fc_norm.")) for name in trainable)
        and "blocks.2.attn.qkv.weight" in trainable
    )
    frozen = apply_finetune_mode(RetinaViT(**TINY), {"mode": "frozen"})
    assert not any(p.requires_grad for p in frozen.parameters())
    with pytest.raises(ValueError, match=r"finetune\.mode"):
        apply_finetune_mode(RetinaViT(**TINY), {"mode": "half"})


def test_lora_adapters_train_only_adapters_and_merge_into_a_plain_encoder() -> None:
    torch.manual_seed(0)
    encoder = apply_finetune_mode(RetinaViT(**TINY), {"mode": "lora", "lora": {"r": 4, "alpha": 8}}).eval()
    trainable = [name for name, p in encoder.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name or name.startswith("fc_norm") for name in trainable)
    for name, parameter in encoder.named_parameters():
        if "lora_B" in name:
            parameter.data.normal_()  # a trained adapter
    images = torch.randn(2, 3, 32, 32)
    merged = merged_encoder(encoder).eval()
    assert type(merged) is RetinaViT and not any("lora" in key for key in merged.state_dict())
    torch.testing.assert_close(merged.encode(images).pooled, encoder.encode(images).pooled, atol=1e-5, rtol=1e-4)


def test_layer_decay_scales_lr_by_depth_and_skips_decay_on_norms() -> None:
    encoder = RetinaViT(**TINY)
    named = [(f"image_encoder.{n}", p) for n, p in encoder.named_parameters()]
    groups = layer_decay_groups(named, encoder, base_lr=1.0, layer_decay=0.5)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert lr_of[id(encoder.patch_embed.proj.weight)] == pytest.approx(0.5**4)
    assert lr_of[id(encoder.blocks[2].mlp.fc1.weight)] == pytest.approx(0.5)
    assert lr_of[id(encoder.fc_norm.weight)] == pytest.approx(1.0)
    no_decay = {id(p) for g in groups if g.get("weight_decay") == 0.0 for p in g["params"]}
    assert id(encoder.blocks[0].norm1.weight) in no_decay and id(encoder.blocks[0].attn.qkv.weight) not in no_decay


def test_collapsed_projections_raise_a_warning() -> None:
    module = AlignModule(
        RetinaViT(**TINY),
        BiomarkerEncoder({"modalities": ["oct"]}, hidden_dims=(16,), out_dim=16),
        lambda in_dim: ProjectionHead(in_dim, 8),
        lambda in_dim: ProjectionHead(in_dim, 8),
        ContrastiveLoss("clip"),
        optimizer=torch.optim.AdamW,
    )
    healthy = torch.randn(16, 8)
    module._warn_on_collapse(healthy, healthy)
    with pytest.warns(UserWarning, match="collapsing"):
        module._warn_on_collapse(torch.ones(16, 8) + 1e-4 * torch.randn(16, 8), healthy)
