"""AlignDataModule: (OCT B-scan, biomarker row) pairs from one table, split by subject with `split_of`.

Training draws are pure functions of (seed, epoch, index): `EpochShuffle` orders each epoch from (seed, epoch) and
hands the dataset (epoch, index) keys, so an item's augmentation and its batch's SCARF corruption do not depend on
earlier epochs, on the worker that made it, or on a resume from a checkpoint.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, RandomSampler, default_collate

from grok.align.augment import OCTSpeckle
from grok.data.io import read_oct, read_oct_volume
from grok.data.splits import DEFAULT_FRACTIONS, split_of
from grok.data.table import read_table
from grok.data.transforms import build_transform, transform_slices
from grok.models.slices import slice_spec
from grok.models.tabular import TabularPreprocessor, resolve_features, scarf_corrupt
from grok.schema import load_schema, parse_labels
from grok.utils.train import derived_seed, seeded

log = logging.getLogger(__name__)
SEED_KEY = "seed"  # a training item's draw seed, read (and removed) by ScarfCollate


class EpochShuffle(RandomSampler):
    """A random order that is a function of (seed, epoch) only; yields (epoch, index) keys. Lightning calls
    `set_epoch` before each epoch (and swaps in a DistributedSampler under DDP: plain indices, global-RNG draws)."""

    def __init__(self, data_source: Sequence, seed: int = 0) -> None:
        super().__init__(data_source)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        generator = torch.Generator().manual_seed(derived_seed(self.seed, "shuffle", self.epoch))
        for index in torch.randperm(len(self.data_source), generator=generator).tolist():
            yield self.epoch, index


class PairedOCTTableDataset(Dataset):
    """One item per eye: the OCT image tensor ([3, H, W], or [S, 3, H, W], the B-scans `oct_slices` picks from the
    eye's volume), its preprocessed biomarker row, multi-hot labels and probe targets."""

    def __init__(
        self,
        table: pd.DataFrame,
        arrays: Mapping[str, np.ndarray],
        image_paths: Sequence[Path],
        transform: Callable[[Image.Image], Tensor],
        speckle: OCTSpeckle | None = None,
        cache_images: bool = False,
        seed: int = 0,
        oct_slices: object = None,
    ) -> None:
        self.table = table.reset_index(drop=True)
        self.oct_slices = slice_spec(oct_slices)
        self.numeric = torch.from_numpy(arrays["numeric"])
        self.missing = torch.from_numpy(arrays["missing"])
        self.categorical = torch.from_numpy(arrays["categorical"])
        self.labels = torch.from_numpy(arrays["labels"])
        self.targets = torch.from_numpy(np.array(arrays["targets"]))
        self.image_paths = list(image_paths)
        self.transform, self.speckle = transform, speckle
        self.cache: dict[int, Image.Image] | None = {} if cache_images else None
        self.seed = seed

    def __len__(self) -> int:
        return len(self.image_paths)

    def _image(self, index: int) -> Image.Image | list[Image.Image]:
        if self.cache is not None and index in self.cache:
            return self.cache[index]
        path = self.image_paths[index]
        if self.oct_slices is None:
            image = read_oct(path)
        else:  # a volume's chosen B-scans
            image = [Image.fromarray(scan) for scan in read_oct_volume(path, self.oct_slices)]
        if self.cache is not None:
            self.cache[index] = image
        return image

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Tensor]:
        """The item at `key`: an index (augmented from torch's global RNG), or (epoch, index) from `EpochShuffle`
        (augmented from a seed of (seed, epoch, index), which the item carries to its batch's collate)."""
        epoch, index = key if isinstance(key, tuple) else (None, key)
        draw = None if epoch is None else derived_seed(self.seed, "item", epoch, index)
        with seeded(draw):
            image = self._image(index)
            scans = image if isinstance(image, list) else [image]
            if self.speckle is not None:
                scans = [self.speckle(scan) for scan in scans]
            image = transform_slices(self.transform, scans) if isinstance(image, list) else self.transform(scans[0])
        item = {
            "image": image,
            "numeric": self.numeric[index],
            "missing": self.missing[index],
            "categorical": self.categorical[index],
            "labels": self.labels[index],
            "targets": self.targets[index],
            "index": torch.tensor(index),
        }
        if draw is not None:
            item[SEED_KEY] = torch.tensor(draw)
        return item


class ScarfCollate:
    """Collate a training batch, then SCARF-corrupt its biomarker rows in one vectorised call (missing mask updated).

    The corruption draws from a seed of the items' own seeds when they carry one (`EpochShuffle` keys), else from
    torch's global RNG; `rate=0` only collates.
    """

    def __init__(self, rate: float, bank_numeric: Tensor, bank_categorical: Tensor) -> None:
        self.rate, self.bank_numeric, self.bank_categorical = rate, bank_numeric, bank_categorical

    def __call__(self, items: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        draws = [int(item.pop(SEED_KEY)) for item in items if SEED_KEY in item]
        batch = default_collate(items)
        if self.rate == 0:
            return batch
        with seeded(derived_seed("scarf", *draws) if draws else None):
            batch["numeric"], batch["categorical"] = scarf_corrupt(
                batch["numeric"], batch["categorical"], self.bank_numeric, self.bank_categorical, self.rate
            )
        batch["missing"] = torch.isnan(batch["numeric"])
        return batch


class AlignDataModule(L.LightningDataModule):
    """Train/val/test pairs of the biomarker table (subject-level split) plus a probe view of the training split.

    The table is checked against the schema on read (`validate_table`, `check_images`): a bad table stops `setup`,
    before any training, with the validator's report. Standardisation statistics come from the training split only.
    Training items get OCT augmentation and SCARF corruption of the biomarker row at `corruption_rate`; the probe
    loader serves the training split un-augmented.
    """

    def __init__(
        self,
        table_path: str,
        image_root: str | None = None,
        image_column: str = "oct_path",
        features: Mapping[str, Any] | None = None,
        standardise: bool = True,
        probe_targets: Sequence[str] = (),
        transform: Mapping[str, Any] | None = None,
        augment: Mapping[str, Any] | None = None,
        speckle: Mapping[str, float] | None = None,
        corruption_rate: float = 0.3,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        split_seed: int = 0,
        split_fractions: Mapping[str, float] | None = None,
        cache_images: bool = False,
        validate_table: bool = True,
        check_images: bool = True,
        seed: int = 0,
        oct_slices: object = None,
    ) -> None:
        super().__init__()
        self.oct_slices = slice_spec(oct_slices)
        self.table_path = Path(table_path)
        self.validate_table, self.check_images = validate_table, check_images
        self.image_root = Path(image_root) if image_root else self.table_path.parent
        self.image_column = image_column
        self.features = resolve_features(features or {"modalities": ["oct"]})
        self.preprocessor = TabularPreprocessor(self.features, standardise=standardise)
        self.probe_targets = list(probe_targets)
        if not transform or "family" not in transform or "image_size" not in transform:
            raise ValueError(f"data.transform must give the encoder's family and image_size, got {transform!r}")
        self.transform_config = dict(transform)
        self.augment = dict(augment) if augment else None
        self.speckle = OCTSpeckle(**speckle) if speckle else None
        self.corruption_rate = corruption_rate
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.split_seed = split_seed
        self.split_fractions = dict(split_fractions or DEFAULT_FRACTIONS)
        self.cache_images = cache_images
        self.seed = seed
        self.label_names = load_schema().label_names
        self.datasets: dict[str, PairedOCTTableDataset] = {}
        self.train_collate: ScarfCollate | None = None

    def setup(self, stage: str | None = None) -> None:
        """Read the table, assign subject-level splits, fit standardisation on train, build the datasets."""
        if self.datasets:
            return
        table = read_table(
            self.table_path, self.validate_table, self.check_images, self.image_root, key="data.table_path"
        )
        for column in ("subject_id", self.image_column, *self.probe_targets):
            if column not in table.columns:
                raise KeyError(f"{self.table_path}: column '{column}' is required by the align data config")
        has_image = table[self.image_column].notna()
        if (~has_image).any():
            log.warning("%s: %d row(s) without %s skipped", self.table_path, (~has_image).sum(), self.image_column)
        table = table[has_image].reset_index(drop=True)
        split = table["subject_id"].astype(str).map(lambda s: split_of(s, self.split_seed, self.split_fractions))
        train_table = table[split == "train"]
        if train_table.empty:
            raise ValueError(f"{self.table_path}: no rows fall in the train split (data.split_fractions)")
        self.preprocessor.fit(train_table)
        bank = self.preprocessor.transform(train_table)
        self.train_collate = ScarfCollate(
            self.corruption_rate, torch.from_numpy(bank["numeric"]), torch.from_numpy(bank["categorical"])
        )
        family, size = self.transform_config["family"], int(self.transform_config["image_size"])
        train_transform = build_transform(family, "oct", size, train=True, augment=self.augment)
        eval_transform = build_transform(family, "oct", size, train=False)
        views = {
            "train": (split == "train", train_transform, self.speckle),
            "val": (split == "val", eval_transform, None),
            "test": (split == "test", eval_transform, None),
            "probe": (split == "train", eval_transform, None),
        }
        for name, (rows, transform, speckle) in views.items():
            part = table[rows]
            self.datasets[name] = PairedOCTTableDataset(
                part,
                self._arrays(part),
                [self.image_root / str(p) for p in part[self.image_column]],
                transform,
                speckle=speckle,
                cache_images=self.cache_images,
                seed=self.seed,
                oct_slices=self.oct_slices,
            )
        log.info("align data: %s", {name: len(dataset) for name, dataset in self.datasets.items()})
        if len(self.datasets["train"]) < self.batch_size:
            raise ValueError(
                f"data.batch_size={self.batch_size} exceeds the {len(self.datasets['train'])} training pairs"
            )

    def _arrays(self, part: pd.DataFrame) -> dict[str, np.ndarray]:
        arrays = self.preprocessor.transform(part)
        labels = np.zeros((len(part), len(self.label_names)), dtype=np.float32)
        for row, cell in enumerate(part.get("labels", pd.Series([None] * len(part)))):
            for name in parse_labels(cell):
                labels[row, self.label_names.index(name)] = 1.0
        arrays["labels"] = labels
        arrays["targets"] = part[self.probe_targets].to_numpy(dtype=np.float32).reshape(len(part), -1)
        return arrays

    def _loader(self, name: str, train: bool = False) -> DataLoader:
        dataset = self.datasets[name]
        return DataLoader(
            dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            sampler=EpochShuffle(dataset, self.seed) if train else None,
            drop_last=train,  # equal per-rank batches for the gathered contrastive loss
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            collate_fn=self.train_collate if train and self.train_collate is not None else default_collate,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def probe_dataloader(self) -> DataLoader:
        """The training split without augmentation or corruption (fits the linear probes)."""
        return self._loader("probe")

    def state_dict(self) -> dict[str, Any]:
        return {"preprocessor": self.preprocessor.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the checkpoint's standardisation; warn when it differs from the one refitted on today's table."""
        fitted = self.preprocessor.state_dict()
        self.preprocessor.load_state_dict(state_dict["preprocessor"])
        if self.datasets and not np.allclose(fitted["mean"], state_dict["preprocessor"]["mean"], rtol=1e-5):
            log.warning("%s: training-split statistics differ from the checkpoint's (table changed?)", self.table_path)
