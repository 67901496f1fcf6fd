"""The contrastive losses: definitions, temperature handling, and exact equivalence under two gloo processes."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from grok.align.loss import ContrastiveLoss

BATCH, IN_DIM, OUT_DIM = 8, 6, 5


def _reference_ntxent(image: torch.Tensor, table: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR NT-Xent written the textbook way: one (2N x 2N) similarity matrix, self excluded."""
    z = F.normalize(torch.cat([image, table]), dim=-1)
    n = image.shape[0]
    similarity = z @ z.T / temperature
    similarity.fill_diagonal_(float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    return F.cross_entropy(similarity, targets)


def test_ntxent_matches_the_2n_way_definition_with_same_modality_negatives() -> None:
    torch.manual_seed(0)
    image, table = torch.randn(BATCH, OUT_DIM), torch.randn(BATCH, OUT_DIM)
    loss = ContrastiveLoss("ntxent", temperature=0.5, learn_temperature=False)
    torch.testing.assert_close(loss(image, table), _reference_ntxent(image, table, 0.5))


def test_clip_is_symmetric_infonce_with_logit_scale_from_temperature() -> None:
    torch.manual_seed(0)
    image, table = torch.randn(BATCH, OUT_DIM), torch.randn(BATCH, OUT_DIM)
    loss = ContrastiveLoss("clip", temperature=0.07)
    assert loss.logit_scale.item() == pytest.approx(1 / 0.07)
    logits = F.normalize(image, dim=-1) @ F.normalize(table, dim=-1).T / 0.07
    expected = (F.cross_entropy(logits, torch.arange(BATCH)) + F.cross_entropy(logits.T, torch.arange(BATCH))) / 2
    torch.testing.assert_close(loss(image, table), expected)
    perfect = loss(table, table)
    assert perfect < expected


def test_logit_scale_is_clamped() -> None:
    loss = ContrastiveLoss("clip", temperature=0.07, max_logit_scale=50.0)
    with torch.no_grad():
        loss.log_logit_scale.fill_(10.0)
    assert loss.logit_scale.item() == pytest.approx(50.0)
    loss.clamp_logit_scale_()
    assert loss.log_logit_scale.item() == pytest.approx(math.log(50.0))


def _data() -> tuple[torch.nn.Linear, torch.nn.Linear, torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    image_head, table_head = torch.nn.Linear(IN_DIM, OUT_DIM), torch.nn.Linear(IN_DIM, OUT_DIM)
    return image_head, table_head, torch.randn(2 * BATCH, IN_DIM), torch.randn(2 * BATCH, IN_DIM)


def _loss_and_grads(kind: str, rows: slice) -> tuple[torch.Tensor, list[torch.Tensor]]:
    image_head, table_head, images, tables = _data()
    loss_fn = ContrastiveLoss(kind, temperature=0.5 if kind == "ntxent" else 0.07)
    loss = loss_fn(image_head(images[rows]), table_head(tables[rows]))
    loss.backward()
    parameters = [*image_head.parameters(), *table_head.parameters(), *loss_fn.parameters()]
    return loss.detach(), [parameter.grad.clone() for parameter in parameters]


def _worker(rank: int, world_size: int, store_path: str, out_dir: str) -> None:
    store = dist.FileStore(store_path, world_size)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world_size)
    try:
        results = {}
        for kind in ("clip", "ntxent"):
            loss, grads = _loss_and_grads(kind, slice(rank * BATCH, (rank + 1) * BATCH))
            dist.all_reduce(loss)
            for grad in grads:  # what DDP does: average the ranks' gradients
                dist.all_reduce(grad)
                grad /= world_size
            results[kind] = (loss / world_size, grads)
        if rank == 0:
            torch.save(results, Path(out_dir) / "distributed.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_two_gloo_ranks_equal_single_process_loss_and_gradients(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    distributed = torch.load(tmp_path / "distributed.pt")
    for kind in ("clip", "ntxent"):
        loss, grads = _loss_and_grads(kind, slice(0, 2 * BATCH))
        torch.testing.assert_close(distributed[kind][0], loss, msg=f"{kind} loss")
        for index, (got, expected) in enumerate(zip(distributed[kind][1], grads, strict=True)):
            torch.testing.assert_close(got, expected, msg=f"{kind} gradient {index}")
