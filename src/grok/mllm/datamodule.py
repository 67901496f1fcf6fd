"""Stage-one instruction JSONL -> tokenised ChatML conversations + images, as Lightning dataloaders."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from grok.data.io import read_cfp, read_oct, read_oct_volume
from grok.data.transforms import build_transform, transform_slices
from grok.grounding.config import GroundingSettings, knowledge_base_of, quantity_tokens_of
from grok.grounding.conversation import ConversationGrounding
from grok.grounding.counterfactual import CounterfactualRecords
from grok.mllm.chat import DEFAULT_SYSTEM_PROMPT, encode_conversation
from grok.mllm.collator import InstructCollator, LengthGroupedSampler
from grok.mllm.instructions import (
    ANSWER_ROLES,
    InstructionFormatError,
    read_instructions,
    read_manifest,
    role_of,
)
from grok.mllm.model import MODALITIES
from grok.mllm.tokenizer import IMAGE_PLACEHOLDERS
from grok.models.encoders import read_export_config
from grok.models.slices import slice_spec

log = logging.getLogger(__name__)
READERS: Mapping[str, Callable] = {"oct": read_oct, "cfp": read_cfp}


def image_paths(record: Mapping[str, Any], modality: str) -> list[str]:
    """The record's image paths of one modality (a single path or a list in `images[modality]`)."""
    value = (record.get("images") or {}).get(modality)
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


class InstructionDataset(Dataset):
    """Tokenised conversations with their images (or cached encoder features).

    With `generation=True` each record becomes a prompt: the turns before the first assistant turn plus the
    assistant header; the first assistant turn is kept as `reference`.

    With `grounding`, every stated number is a quantity token and each item carries the record's value table: every
    value of its facts for training (teacher forcing), only what the prompt states (plus, with `input_columns="all"`,
    its table row) for generation. With `counterfactuals` (training), an item is, with `counterfactual_probability`,
    a counterfactual variant of its record (grok.grounding.counterfactual), drawn afresh each `epoch`; its
    `readout_values` stay the eye's own. With `modality_dropout` ({modality: probability}, training, needs the
    counterfactual writer), an item is instead, with that probability, stage one's record of the eye without that
    image (its quantities unmeasured; an eye keeps at least one image).

    With `oct_slices` (`data.oct_slices`: central, k or a list of indices), each OCT path is a volume (slice folder,
    multi-page TIFF, Heidelberg file) and its image is the chosen B-scans, each preprocessed: [S, 3, H, W].
    """

    def __init__(
        self,
        records: Sequence[Mapping[str, Any]],
        tokenizer: Any,
        image_root: str | Path,
        transforms: Mapping[str, Callable],
        system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
        max_length: int | None = None,
        generation: bool = False,
        grounding: ConversationGrounding | None = None,
        input_columns: str | None = None,
        counterfactuals: CounterfactualRecords | None = None,
        counterfactual_probability: float = 0.0,
        seed: int = 0,
        oct_slices: object = None,
        modality_dropout: Mapping[str, float] | None = None,
    ) -> None:
        self.records = list(records)
        for modality, probability in (modality_dropout or {}).items():
            if modality not in MODALITIES or not 0 <= float(probability) <= 1:
                raise ValueError(
                    f"data.modality_dropout.{modality}={probability}: expected a probability in [0, 1] for one of "
                    f"{list(MODALITIES)}"
                )
        self.modality_dropout = {m: float(p) for m, p in (modality_dropout or {}).items() if float(p) > 0}
        if sum(self.modality_dropout.values()) > 1:
            raise ValueError(f"data.modality_dropout {self.modality_dropout}: the probabilities must sum to at most 1")
        self.oct_slices = slice_spec(oct_slices)
        self.tokenizer = tokenizer
        self.image_root = Path(image_root)
        self.transforms = dict(transforms)
        self.system_prompt = system_prompt
        self.max_length = max_length
        self.generation = generation
        self.grounding = grounding
        self.input_columns = input_columns
        self.counterfactuals = counterfactuals if not generation else None
        self.counterfactual_probability = float(counterfactual_probability)
        self.seed = seed
        self.epoch = 0  # set by the training module each epoch: counterfactual draws depend on (seed, epoch, index)
        self.features: dict[str, Mapping[str, torch.Tensor]] = {}
        self.encoded = []
        self.tables = []
        for record in self.records:
            if not generation and not any(role_of(turn) in ANSWER_ROLES for turn in record["conversations"]):
                where = record.get("_source", record.get("id", "?"))
                raise InstructionFormatError(
                    f"{where}: no 'gpt' turn to train on (expected an answer in 'conversations')"
                )
            encoded, table = self._encode(record)
            self.encoded.append(encoded)
            if table is not None:
                self.tables.append(table)

    def _encode(self, record: Mapping[str, Any]) -> tuple[Any, dict[str, Any] | None]:
        """A record's encoded conversation (numbers as quantity tokens with grounding) and its value table."""
        grounding = self.grounding
        turns = grounding.grounded_turns(record) if grounding is not None else record["conversations"]
        if self.generation:
            first_answer = next((i for i, t in enumerate(turns) if t.get("from") in ("gpt", "assistant")), None)
            turns = turns[:first_answer] if first_answer is not None else turns
        encoded = encode_conversation(
            self.tokenizer,
            turns,
            system_prompt=self.system_prompt,
            add_generation_prompt=self.generation,
            max_length=self.max_length,
            record_id=record.get("_source", record.get("id", "?")),
        )
        self._check_placeholders(record, turns)
        if grounding is None:
            return encoded, None
        if self.generation:
            return encoded, grounding.input_table(record, self.input_columns).as_item()
        return encoded, grounding.training_table(record).as_item()

    def _without_image(self, index: int) -> dict[str, Any] | None:
        """This epoch's modality-dropout variant of record `index` (an image dropped, the record rewritten), or None."""
        if self.counterfactuals is None or not self.modality_dropout:
            return None
        record = self.records[index]
        if len(record.get("images") or {}) < 2:  # keep at least one image
            return None
        draw, cumulative = random.Random(f"{self.seed}:{self.epoch}:{index}:dropout").random(), 0.0
        for modality, probability in self.modality_dropout.items():
            cumulative += probability
            if draw < cumulative:
                return self.counterfactuals.without_image(record, modality)
        return None

    def _counterfactual(self, index: int) -> tuple[Any, dict[str, Any]] | None:
        """This epoch's counterfactual variant of record `index`, encoded, or None (drawn against the probability)."""
        if self.counterfactuals is None or self.counterfactual_probability <= 0:
            return None
        rng = random.Random(f"{self.seed}:{self.epoch}:{index}")
        if rng.random() >= self.counterfactual_probability:
            return None
        variant = self.counterfactuals.variant(self.records[index], rng)
        if variant is None:
            return None
        encoded, table = self._encode(variant)
        return encoded, table

    @staticmethod
    def _check_placeholders(record: Mapping[str, Any], turns: Sequence[Mapping[str, str]]) -> None:
        text = "".join(turn.get("value", turn.get("content", "")) for turn in turns)
        for token, modality in zip(IMAGE_PLACEHOLDERS, MODALITIES, strict=True):
            if text.count(token) != len(image_paths(record, modality)):
                raise InstructionFormatError(
                    f"{record.get('_source', record.get('id'))}: {text.count(token)} {token} placeholder(s) but "
                    f"{len(image_paths(record, modality))} image(s) in images.{modality}"
                )

    @property
    def lengths(self) -> list[int]:
        """Token count of each conversation (placeholders count as one)."""
        return [len(encoded.input_ids) for encoded in self.encoded]

    def image_items(self, modality: str) -> dict[str, Path]:
        """Every image of a modality: relative path (the cache key) -> absolute path."""
        return {path: self.image_root / path for record in self.records for path in image_paths(record, modality)}

    def load_image(self, modality: str, relative_path: str) -> torch.Tensor:
        """Read and preprocess one image ([3, H, W]), or the chosen slices of an OCT volume ([S, 3, H, W])."""
        path, transform = self.image_root / relative_path, self.transforms[modality]
        if modality == "oct" and self.oct_slices is not None:
            return transform_slices(transform, [Image.fromarray(s) for s in read_oct_volume(path, self.oct_slices)])
        return transform(READERS[modality](path))

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record, encoded = self.records[index], self.encoded[index]
        table = self.tables[index] if self.tables else None
        dropped = self._without_image(index)
        counterfactual = self._encode(dropped) if dropped is not None else self._counterfactual(index)
        if counterfactual is not None:
            encoded, table = counterfactual[0], {**counterfactual[1], "readout_values": table["quantity_values"]}
        record = dropped if dropped is not None else record  # its images are the item's
        item: dict[str, Any] = {"id": record.get("id"), "input_ids": encoded.input_ids}
        if table is not None:
            item.update(table)
            item.setdefault("readout_values", table["quantity_values"])
        if self.generation:
            turns = record["conversations"]
            item["reference"] = next((t.get("value") for t in turns if t.get("from") in ("gpt", "assistant")), None)
        else:
            item["labels"] = encoded.labels
        for modality in MODALITIES:
            paths = image_paths(record, modality)
            if modality in self.features:
                item[f"{modality}_features"] = [self.features[modality][path] for path in paths]
            else:
                item[f"{modality}_pixels"] = [self.load_image(modality, path) for path in paths]
        return item


def image_root_of(instructions_dir: str | Path, explicit: str | Path | None = None) -> Path:
    """The folder an instruction set's image paths are relative to: `explicit` if given, else its manifest's."""
    if explicit:
        return Path(explicit)
    manifest = Path(instructions_dir) / "manifest.json"
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest} not found; run `make data` (grok-generate) or set data.image_root")
    root = read_manifest(instructions_dir).get("image_root")
    if not root or not isinstance(root, str):
        raise InstructionFormatError(f"{manifest}: no 'image_root' key (contract 5)")
    return Path(root)


def _transform_entry(settings: Mapping[str, Any]) -> dict[str, Any]:
    """`family`/`image_size` of one modality's `data.image_transforms` entry; an existing encoder export (`export`
    key) overrides the config."""
    settings = dict(settings)
    export = settings.pop("export", None)
    if export and Path(export).with_suffix(".json").is_file():
        settings.update(read_export_config(export).get("transform") or {})
    return settings


def image_transforms(settings: Mapping[str, Mapping[str, Any]], train: bool = False) -> dict[str, Callable]:
    """The preprocessing of every modality of `data.image_transforms` (augmented with `train`): the one path
    training, generation and serving share."""
    transforms = {}
    for modality, entry in settings.items():
        resolved = _transform_entry(entry)
        transforms[modality] = build_transform(
            family=resolved.get("family", "tiny"),
            modality=modality,
            image_size=int(resolved["image_size"]),
            train=train,
        )
    return transforms


def conversation_grounding(grounding: Mapping[str, Any] | None) -> ConversationGrounding | None:
    """The ConversationGrounding of a `grounding` config node (None for grounding=none)."""
    settings = GroundingSettings.from_config(grounding)
    if settings is None:
        return None
    kb = knowledge_base_of(settings)
    return ConversationGrounding(quantity_tokens_of(settings, kb), kb, tolerance=settings.match_tolerance)


class InstructDataModule(L.LightningDataModule):
    """Reads `{instructions_dir}/{train,val,test}.jsonl` and `manifest.json` (its `image_root`)."""

    def __init__(
        self,
        instructions_dir: str,
        tokenizer: Any,
        image_transforms: Mapping[str, Mapping[str, Any]],
        system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
        max_length: int = 1024,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        group_by_length: bool = True,
        augment: bool = False,
        tasks: Sequence[str] | None = None,
        max_records: Mapping[str, int] | None = None,
        image_root: str | None = None,
        seed: int = 0,
        grounding: Mapping[str, Any] | None = None,
        counterfactual: Mapping[str, Any] | None = None,
        oct_slices: object = None,
        modality_dropout: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        self.modality_dropout = dict(modality_dropout or {})
        self.oct_slices = slice_spec(oct_slices)
        self.instructions_dir = Path(instructions_dir)
        self.tokenizer = tokenizer
        self.image_transforms = {modality: dict(settings) for modality, settings in image_transforms.items()}
        self.system_prompt = system_prompt
        self.max_length = max_length
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.group_by_length = group_by_length
        self.augment = augment
        self.tasks = set(tasks) if tasks else None
        self.max_records = dict(max_records or {})
        self.explicit_image_root = image_root
        self.seed = seed
        self.grounding = conversation_grounding(grounding)
        self.counterfactual = dict(counterfactual or {"probability": 0.0})
        if self.grounding is None and any(float(p) > 0 for p in self.modality_dropout.values()):
            raise ValueError("data.modality_dropout rewrites records from their value tables: it needs grounding")
        self.datasets: dict[str, InstructionDataset] = {}
        self.features: dict[str, Mapping[str, torch.Tensor]] = {}

    def _counterfactuals(self, records: Sequence[Mapping[str, Any]]) -> CounterfactualRecords | None:
        """The counterfactual writer of the training records (grounding only): for counterfactual answers, modality
        dropout (the record of an eye without an image) or both; None when neither is on."""
        dropout = any(float(p) > 0 for p in self.modality_dropout.values())
        if self.grounding is None or (float(self.counterfactual.get("probability", 0.0)) <= 0 and not dropout):
            return None
        config = read_manifest(self.instructions_dir).get("config") or {}
        return CounterfactualRecords(
            records,
            self.grounding.kb,
            self.grounding.tokens.keys,
            swap_share=float(self.counterfactual.get("swap_share", 0.5)),
            style_weights=(config.get("style_weights") or {}).get("train"),
            seed=int(config.get("seed", 0)),
            image_keys=self.grounding.tokens.image_keys,
        )

    @property
    def image_root(self) -> Path:
        """Folder image paths are relative to: `image_root` if given, else the manifest's."""
        return image_root_of(self.instructions_dir, self.explicit_image_root)

    def transforms(self, train: bool) -> dict[str, Callable]:
        """Preprocessing per modality (augmentation only with `train` and `augment`)."""
        return image_transforms(self.image_transforms, train=train and self.augment)

    def build_dataset(
        self, split: str, generation: bool = False, tasks: Sequence[str] | None = None, limit: int | None = None
    ) -> InstructionDataset:
        """The dataset of one split (`generation`: prompts only, references kept) of `tasks` (default: `data.tasks`),
        at most `limit` records (default: `data.max_records`); attached features are served for its images."""
        records = read_instructions(self.instructions_dir / f"{split}.jsonl")
        wanted = set(tasks) if tasks else self.tasks
        if wanted:
            records = [record for record in records if record.get("task") in wanted]
        limit = limit if limit is not None else self.max_records.get(split)
        if limit is not None:
            records = records[: int(limit)]
        dataset = InstructionDataset(
            records,
            self.tokenizer,
            self.image_root,
            self.transforms(train=split == "train" and not generation),
            system_prompt=self.system_prompt,
            max_length=self.max_length,
            generation=generation,
            grounding=self.grounding,
            counterfactuals=self._counterfactuals(records) if split == "train" and not generation else None,
            counterfactual_probability=float(self.counterfactual.get("probability", 0.0)),
            seed=self.seed,
            oct_slices=self.oct_slices,
            modality_dropout=self.modality_dropout if split == "train" and not generation else None,
        )
        dataset.features.update(self.features)
        return dataset

    def setup(self, stage: str | None = None) -> None:
        """Tokenise the train and val splits (once)."""
        for split in ("train", "val"):
            if split not in self.datasets:
                self.datasets[split] = self.build_dataset(split)
                log.info("%s: %d conversations", split, len(self.datasets[split]))
        if stage in (None, "fit") and not len(self.datasets["train"]):
            tasks = f" of tasks {sorted(self.tasks)}" if self.tasks else ""
            raise InstructionFormatError(
                f"{self.instructions_dir / 'train.jsonl'}: no training conversations{tasks} (data.tasks, "
                "data.max_records); nothing to train on"
            )

    def image_items(self, modality: str) -> dict[str, Path]:
        """Every image of a modality across the datasets set up so far: relative path -> absolute path."""
        return {key: path for dataset in self.datasets.values() for key, path in dataset.image_items(modality).items()}

    def attach_features(self, modality: str, features: Mapping[str, torch.Tensor]) -> None:
        """Serve cached encoder features of `modality` instead of reading images (see `feature_cache`), in every
        dataset set up so far and every one built later."""
        self.features[modality] = features
        for dataset in self.datasets.values():
            dataset.features[modality] = features

    def train_dataloader(self) -> DataLoader:
        dataset = self.datasets["train"]
        sampler = (
            LengthGroupedSampler(dataset.lengths, self.batch_size, seed=self.seed) if self.group_by_length else None
        )
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            shuffle=sampler is None,
            collate_fn=InstructCollator(self.tokenizer.pad_token_id, "right"),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            drop_last=False,
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(
            self.datasets["val"],
            batch_size=self.eval_batch_size,
            shuffle=False,
            collate_fn=InstructCollator(self.tokenizer.pad_token_id, "right"),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
        )
