"""AlignModule: contrastive alignment of an OCT image encoder with a biomarker-table encoder (Lightning)."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torch.utils.data import DataLoader

from grok.align.finetune import apply_finetune_mode, layer_decay_groups
from grok.align.loss import ContrastiveLoss
from grok.align.metrics import (
    as_numpy,
    linear_probe,
    log_figures,
    plot_retrieval_curve,
    plot_similarity,
    retrieval_metrics,
    similarity_matrix,
)
from grok.models.encoders import RetinaViT
from grok.models.slices import slice_count

log = logging.getLogger(__name__)


class AlignModule(L.LightningModule):
    """Image encoder + projection and table encoder + projection trained with a `ContrastiveLoss`.

    Each validation epoch logs retrieval recall@k (both directions), the mean cosine of true pairs, and linear probes
    (frozen pooled image embeddings -> diagnosis labels, -> `probe.targets` biomarkers) next to the same probes on the
    un-aligned (initial) encoder, computed once at the start of fitting and stored in checkpoints.
    """

    def __init__(
        self,
        image_encoder: RetinaViT | Callable[[], RetinaViT],
        tabular_encoder: nn.Module,
        image_projection: Callable[..., nn.Module],
        table_projection: Callable[..., nn.Module],
        loss: ContrastiveLoss,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        finetune: Mapping[str, Any] | None = None,
        layer_decay: float | None = None,
        probe: Mapping[str, Any] | None = None,
        plots: Mapping[str, Any] | None = None,
        collapse_threshold: float = 0.05,
        retrieval_ks: tuple[int, ...] = (1, 5, 10),
        warmup_ratio: float = 0.0,
        oct_slices: Any = None,
        slice_aggregator: Callable[..., nn.Module] | None = None,
    ) -> None:
        super().__init__()
        # No save_hyperparameters: the composed Hydra config is the record (logged by the runner, kept in .hydra/),
        # and checkpoints stay loadable with torch.load(weights_only=True).
        if not isinstance(image_encoder, nn.Module):  # the encoder group's configs are `_partial_` builders
            image_encoder = image_encoder()
        self.image_encoder = apply_finetune_mode(image_encoder, finetune or {"mode": "full"})
        self.tabular_encoder = tabular_encoder
        self.image_projection = image_projection(in_dim=self.image_encoder.embed_dim)
        self.table_projection = table_projection(in_dim=tabular_encoder.out_dim)
        num_slices = slice_count(oct_slices)
        if num_slices is not None and slice_aggregator is None:
            raise ValueError("data.oct_slices is set but model.slice_aggregator is null: the volumes need one")
        # volumes: each B-scan encoded alone, their pooled embeddings pooled over the slices (not exported: stage three
        # trains its own aggregator on the exported per-slice encoder)
        self.slice_aggregator = (
            slice_aggregator(dim=self.image_encoder.embed_dim, num_slices=num_slices) if num_slices else None
        )
        self.loss = loss
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.layer_decay = layer_decay
        self.probe_config = dict(probe or {})
        self.plot_config = dict(plots or {})
        self.collapse_threshold = collapse_threshold
        self.retrieval_ks = tuple(retrieval_ks)
        self.warmup_ratio = warmup_ratio
        self.unaligned_probe: dict[str, dict[str, float]] | None = None
        self._outputs: dict[str, list[Tensor]] = {}
        self._collapse_warned_epoch = -1

    # ------------------------------------------------------------------ forward
    def embed(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """(pooled image features, image projections, table projections) of a batch; projections unnormalised.
        A volume batch [n, S, 3, H, W] is encoded slice by slice and pooled over its slices."""
        pooled = self.pooled_image(batch["image"])
        table = self.tabular_encoder(batch["numeric"], batch["missing"], batch["categorical"])
        return pooled, self.image_projection(pooled), self.table_projection(table)

    def pooled_image(self, image: Tensor) -> Tensor:
        """[n, D] pooled embeddings of images [n, 3, H, W] or volumes [n, S, 3, H, W] (via the slice aggregator)."""
        if image.dim() == 4:
            return self.image_encoder.encode(image).pooled
        if self.slice_aggregator is None:
            raise ValueError("OCT volumes in the batch ([n, S, 3, H, W]) but data.oct_slices is null")
        pooled = self.image_encoder.encode(image.flatten(0, 1)).pooled.view(*image.shape[:2], 1, -1)
        return self.slice_aggregator(pooled)[:, 0]

    def training_step(self, batch: Mapping[str, Tensor], batch_index: int) -> Tensor:
        _, image_projection, table_projection = self.embed(batch)
        loss = self.loss(image_projection, table_projection)
        batch_size = image_projection.shape[0]
        image_std, table_std = self._projection_std(image_projection), self._projection_std(table_projection)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        self.log("train/logit_scale", self.loss.logit_scale, batch_size=batch_size)
        self.log_dict({"train/image_proj_std": image_std, "train/table_proj_std": table_std}, batch_size=batch_size)
        self._warn_on_collapse(image_projection, table_projection)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_index: int) -> None:
        if isinstance(self.loss.log_logit_scale, nn.Parameter):
            self.loss.clamp_logit_scale_()

    @staticmethod
    def _projection_std(projection: Tensor) -> Tensor:
        """Per-batch standard deviation of unnormalised projections, averaged over dimensions."""
        return projection.detach().float().std(dim=0).mean()

    def _warn_on_collapse(self, *projections: Tensor) -> None:
        """Warn (once per epoch) when a projection's batch std falls below `collapse_threshold` x its RMS."""
        if self._collapse_warned_epoch == self.current_epoch:
            return
        for name, projection in zip(("image", "table"), projections, strict=True):
            projection = projection.detach().float()
            ratio = (projection.std(dim=0).mean() / projection.pow(2).mean().sqrt().clamp_min(1e-12)).item()
            if ratio < self.collapse_threshold:
                rank_zero_warn(
                    f"{name} projections are collapsing: batch std / RMS = {ratio:.4f} < collapse_threshold "
                    f"{self.collapse_threshold} (epoch {self.current_epoch}); lower the lr or raise the temperature"
                )
                self._collapse_warned_epoch = self.current_epoch

    # ------------------------------------------------------------------ evaluation
    def on_fit_start(self) -> None:
        if self.unaligned_probe is None and self.probe_config.get("enabled", True):
            datamodule = self.trainer.datamodule
            train = self._features(datamodule.probe_dataloader())
            self.unaligned_probe = {
                stage: self._probe_from(self._features(loader), train)
                for stage, loader in (("val", datamodule.val_dataloader()), ("test", datamodule.test_dataloader()))
            }
            log.info("un-aligned encoder probe: %s", self.unaligned_probe)

    def validation_step(self, batch: Mapping[str, Tensor], batch_index: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: Mapping[str, Tensor], batch_index: int) -> None:
        self._eval_step(batch, "test")

    def _eval_step(self, batch: Mapping[str, Tensor], stage: str) -> None:
        pooled, image_projection, table_projection = self.embed(batch)
        loss = self.loss(image_projection, table_projection)
        self.log(f"{stage}/loss", loss, batch_size=pooled.shape[0], sync_dist=True)
        for key, value in (
            ("pooled", pooled),
            ("image", image_projection),
            ("table", table_projection),
            ("labels", batch["labels"]),
            ("targets", batch["targets"]),
        ):
            self._outputs.setdefault(key, []).append(value.detach().float())

    def on_validation_epoch_end(self) -> None:
        self._epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._epoch_end("test")

    def _epoch_end(self, stage: str) -> None:
        outputs = {key: self._gathered(torch.cat(values)) for key, values in self._outputs.items()}
        self._outputs = {}
        if not outputs:
            return
        metrics = retrieval_metrics(outputs["image"], outputs["table"], self.retrieval_ks)
        if self.probe_config.get("enabled", True) and not self.trainer.sanity_checking:
            every = int(self.probe_config.get("every_n_epochs", 1))
            if stage == "test" or self.current_epoch % every == 0 or self._is_last_epoch():
                metrics.update(self._probe_from(outputs))
                for key, value in (self.unaligned_probe or {}).get(stage, {}).items():
                    metrics[f"{key}_unaligned"] = value
        self.log_dict({f"{stage}/{key}": float(value) for key, value in metrics.items()}, sync_dist=False)
        if self.plot_config.get("enabled", True) and not self.trainer.sanity_checking and self.global_rank == 0:
            self._plot(outputs, stage)

    def _is_last_epoch(self) -> bool:
        return self.trainer.max_epochs is not None and self.current_epoch >= self.trainer.max_epochs - 1

    def _gathered(self, tensor: Tensor) -> Tensor:
        if self.trainer.world_size == 1:
            return tensor
        return self.all_gather(tensor).reshape(-1, *tensor.shape[1:])

    @torch.no_grad()
    def _features(self, loader: DataLoader) -> dict[str, Tensor]:
        """Pooled image embeddings, labels and targets of a loader, with the encoder in eval mode."""
        was_training = self.image_encoder.training
        self.image_encoder.eval()
        pooled, labels, targets = [], [], []
        for batch in loader:
            images = batch["image"].to(self.device)
            with self.trainer.precision_plugin.forward_context():
                pooled.append(self.pooled_image(images).float().cpu())
            labels.append(batch["labels"])
            targets.append(batch["targets"])
        self.image_encoder.train(was_training)
        return {"pooled": torch.cat(pooled), "labels": torch.cat(labels), "targets": torch.cat(targets)}

    def _probe_from(self, evaluated: Mapping[str, Tensor], train: Mapping[str, Tensor] | None = None) -> dict:
        """Linear probes fitted on the (un-augmented) training split, scored on `evaluated`."""
        train = train or self._features(self.trainer.datamodule.probe_dataloader())
        return linear_probe(
            as_numpy(train["pooled"]),
            as_numpy(train["labels"]),
            as_numpy(train["targets"]),
            as_numpy(evaluated["pooled"]),
            as_numpy(evaluated["labels"]),
            as_numpy(evaluated["targets"]),
            target_names=list(self.trainer.datamodule.probe_targets),
            inverse_regularisation=float(self.probe_config.get("inverse_regularisation", 1.0)),
            ridge_alphas=tuple(self.probe_config.get("ridge_alphas", (0.1, 1.0, 10.0, 100.0))),
        )

    def _plot(self, outputs: Mapping[str, Tensor], stage: str) -> None:
        directory = Path(self.plot_config.get("dir") or Path(self.trainer.default_root_dir) / "plots")
        directory.mkdir(parents=True, exist_ok=True)
        similarity = similarity_matrix(outputs["image"], outputs["table"]).cpu()
        max_items = int(self.plot_config.get("max_items", 64))
        figures = {
            f"{stage}/retrieval_curve": (
                plot_retrieval_curve(similarity, directory / f"{stage}_retrieval_curve.png"),
                directory / f"{stage}_retrieval_curve.png",
            ),
            f"{stage}/similarity": (
                plot_similarity(similarity, directory / f"{stage}_similarity.png", max_items),
                directory / f"{stage}_similarity.png",
            ),
        }
        log_figures(self.loggers, figures, step=self.global_step)

    # ------------------------------------------------------------------ optimisation and checkpoints
    def configure_optimizers(self) -> Any:
        base_lr = getattr(self.optimizer_factory, "keywords", {}).get("lr")
        if base_lr is None:
            raise ValueError("model.optimizer needs an explicit lr (e.g. model.optimizer.lr=1e-4)")
        groups = layer_decay_groups(self.named_parameters(), self.image_encoder, base_lr, self.layer_decay)
        optimizer = self.optimizer_factory(params=groups)
        if self.scheduler_factory is None:
            return optimizer
        total = int(self.trainer.estimated_stepping_batches)
        accepted = inspect.signature(self.scheduler_factory).parameters
        extra: dict[str, int] = {}
        if "num_training_steps" in accepted:
            extra["num_training_steps"] = total
        if "num_warmup_steps" in accepted:
            extra["num_warmup_steps"] = round(self.warmup_ratio * total)
        scheduler = self.scheduler_factory(optimizer, **extra)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["unaligned_probe"] = self.unaligned_probe

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.unaligned_probe = checkpoint.get("unaligned_probe")


def probe_gain(metrics: Mapping[str, float]) -> dict[str, float]:
    """Aligned minus un-aligned probe scores for every `*_unaligned` key present."""
    return {
        key.removesuffix("_unaligned") + "_gain": float(metrics[key.removesuffix("_unaligned")] - value)
        for key, value in metrics.items()
        if key.endswith("_unaligned") and key.removesuffix("_unaligned") in metrics and np.isfinite(value)
    }
