"""Batching of encoded conversations: padded token ids/labels plus every image of the batch with its owner sample."""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler

from grok.mllm.chat import IGNORE_INDEX
from grok.mllm.model import MODALITIES

QUANTITY_FIELDS = (
    "quantity_values",
    "quantity_stated",
    "quantity_low",
    "quantity_high",
    "readout_values",
    "judgement_targets",  # the record's findings and diagnoses (0/1), the value context's judgement targets
)


class InstructCollator:
    """Collate dataset items into a GrokMLLM batch.

    Items hold `input_ids`, optional `labels`, and per modality either `<m>_pixels` (list of [3, H, W]) or
    `<m>_features` (list of cached [N, D] encoder tokens), plus `id`. Token ids are padded on `padding_side`
    ("right" in training, "left" for generation prompts) with `pad_token_id`; labels with IGNORE_INDEX.
    """

    def __init__(self, pad_token_id: int, padding_side: str = "right") -> None:
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        self.pad_token_id = pad_token_id
        self.padding_side = padding_side

    def _pad(self, rows: Sequence[Sequence[int]], value: int) -> torch.Tensor:
        length = max(len(row) for row in rows)
        out = torch.full((len(rows), length), value, dtype=torch.long)
        for index, row in enumerate(rows):
            if self.padding_side == "right":
                out[index, : len(row)] = torch.as_tensor(row, dtype=torch.long)
            else:
                out[index, length - len(row) :] = torch.as_tensor(row, dtype=torch.long)
        return out

    def __call__(self, items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """A batch dict with input_ids, attention_mask, labels (if given), images per modality, ids."""
        input_ids = [item["input_ids"] for item in items]
        batch: dict[str, Any] = {
            "input_ids": self._pad(input_ids, self.pad_token_id),
            "attention_mask": self._pad([[1] * len(row) for row in input_ids], 0),
            "ids": [item.get("id") for item in items],
        }
        if all("labels" in item for item in items):
            batch["labels"] = self._pad([item["labels"] for item in items], IGNORE_INDEX)
        for modality in MODALITIES:
            for kind in ("pixels", "features"):
                key = f"{modality}_{kind}"
                if not any(key in item for item in items):
                    continue
                tensors = [tensor for item in items for tensor in item.get(key, [])]
                owners = [index for index, item in enumerate(items) for _ in item.get(key, [])]
                batch[key] = torch.stack(tensors) if tensors else None
                batch[f"{modality}_sample_index"] = torch.tensor(owners, dtype=torch.long)
        for key in QUANTITY_FIELDS:  # grounding's value tables: [B, K]
            if all(key in item for item in items):
                batch[key] = torch.as_tensor(np.stack([item[key] for item in items]))
        for key in ("reference", "labels_names", "quantity_sex"):
            if any(key in item for item in items):
                batch[key] = [item.get(key) for item in items]
        return batch


class LengthGroupedSampler(Sampler[int]):
    """Shuffled indices ordered so that each run of `batch_size` has similar lengths (less padding).

    Indices are shuffled, cut into mega-batches of `batch_size * mega_batch_factor`, each sorted by length
    (longest first); reshuffled every epoch via `set_epoch` (Lightning calls it), deterministic given `seed`.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, mega_batch_factor: int = 8, seed: int = 0) -> None:
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.mega_batch_factor = mega_batch_factor
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Change the shuffle for a new epoch."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        order = list(range(len(self.lengths)))
        random.Random(self.seed + self.epoch).shuffle(order)
        mega = self.batch_size * self.mega_batch_factor
        for start in range(0, len(order), mega):
            chunk = sorted(order[start : start + mega], key=lambda index: -self.lengths[index])
            yield from chunk
