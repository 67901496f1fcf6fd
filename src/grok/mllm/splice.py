"""Insert visual token sequences into the language model's input embeddings at image placeholders."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

import torch

from grok.mllm.chat import IGNORE_INDEX
from grok.utils.errors import InputError


class PlaceholderMismatchError(InputError):
    """The placeholders in a batch's token ids do not match the images given for it."""


@dataclass
class VisualInput:
    """Visual tokens of every image of one modality in a batch.

    `tokens[i]` ([N, H]) replaces the i-th placeholder of its sample `sample_index[i]`; images of a sample are listed
    in the order their placeholders appear, samples in batch order.
    """

    tokens: torch.Tensor  # [n_images, N, H]
    sample_index: torch.Tensor  # [n_images] long


@dataclass
class SplicedBatch:
    """Language-model inputs after splicing (visual positions carry IGNORE_INDEX labels)."""

    inputs_embeds: torch.Tensor  # [B, T, H]
    attention_mask: torch.Tensor  # [B, T]
    labels: torch.Tensor | None  # [B, T]
    position_ids: torch.Tensor  # [B, T]


def splice_visual_tokens(
    input_ids: torch.Tensor,
    text_embeds: torch.Tensor,
    attention_mask: torch.Tensor,
    visual: Mapping[int, VisualInput],
    labels: torch.Tensor | None = None,
    padding_side: str = "right",
    placeholder_ids: Collection[int] = (),
) -> SplicedBatch:
    """Replace each placeholder token with its image's visual tokens and re-pad the batch.

    Contract: `visual` maps a placeholder token id (`<oct>`, `<cfp>`) to the `VisualInput` of that modality; any
    number of images per sample, either modality may be absent (no entry, or zero images). For every sample and
    modality (every id in `visual` and in `placeholder_ids`, a modality with no entry having zero images) the number
    of placeholders must equal the number of images, else `PlaceholderMismatchError` names the
    sample and the counts (nothing is truncated silently). Padding (`attention_mask == 0`) is dropped and the result
    re-padded on `padding_side` ("right" for training, "left" for batched generation); position ids count real tokens.
    """
    batch_size = input_ids.shape[0]
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    per_sample_images: dict[int, list[list[torch.Tensor]]] = {}
    for placeholder_id, image_input in visual.items():
        owners = image_input.sample_index.tolist()
        if len(owners) != image_input.tokens.shape[0]:
            raise PlaceholderMismatchError(
                f"placeholder {placeholder_id}: {image_input.tokens.shape[0]} token sets, {len(owners)} sample indices"
            )
        buckets: list[list[torch.Tensor]] = [[] for _ in range(batch_size)]
        for image, owner in enumerate(owners):
            if not 0 <= owner < batch_size:
                raise PlaceholderMismatchError(f"placeholder {placeholder_id}: image {image} names sample {owner}")
            buckets[owner].append(image_input.tokens[image])
        per_sample_images[placeholder_id] = buckets
    for placeholder_id in placeholder_ids:
        per_sample_images.setdefault(int(placeholder_id), [[] for _ in range(batch_size)])

    known = torch.tensor(list(per_sample_images), dtype=input_ids.dtype, device=input_ids.device)
    embeds_out, labels_out = [], []
    for sample in range(batch_size):
        keep = attention_mask[sample].bool()
        ids, embeds = input_ids[sample][keep], text_embeds[sample][keep]
        sample_labels = labels[sample][keep] if labels is not None else None
        is_placeholder = torch.isin(ids, known)
        positions = is_placeholder.nonzero().flatten().tolist()
        for placeholder_id, buckets in per_sample_images.items():
            found = int((ids == placeholder_id).sum())
            if found != len(buckets[sample]):
                raise PlaceholderMismatchError(
                    f"sample {sample}: {found} placeholder(s) with token id {placeholder_id} but "
                    f"{len(buckets[sample])} image(s) of that modality"
                )
        pieces, label_pieces, cursor = [], [], 0
        taken = {placeholder_id: 0 for placeholder_id in per_sample_images}
        for position in positions:
            placeholder_id = int(ids[position])
            image_tokens = per_sample_images[placeholder_id][sample][taken[placeholder_id]]
            taken[placeholder_id] += 1
            pieces += [embeds[cursor:position], image_tokens.to(embeds.dtype)]
            if sample_labels is not None:
                ignore = sample_labels.new_full((image_tokens.shape[0],), IGNORE_INDEX)
                label_pieces += [sample_labels[cursor:position], ignore]
            cursor = position + 1
        pieces.append(embeds[cursor:])
        embeds_out.append(torch.cat(pieces))
        if sample_labels is not None:
            label_pieces.append(sample_labels[cursor:])
            labels_out.append(torch.cat(label_pieces))
    return _pad(embeds_out, labels_out if labels is not None else None, padding_side)


def _pad(embeds: list[torch.Tensor], labels: list[torch.Tensor] | None, padding_side: str) -> SplicedBatch:
    lengths = [piece.shape[0] for piece in embeds]
    total = max(lengths)
    batch, hidden = len(embeds), embeds[0].shape[-1]
    inputs_embeds = embeds[0].new_zeros((batch, total, hidden))
    attention_mask = torch.zeros((batch, total), dtype=torch.long, device=embeds[0].device)
    padded_labels = torch.full((batch, total), IGNORE_INDEX, dtype=torch.long, device=embeds[0].device)
    position_ids = torch.zeros((batch, total), dtype=torch.long, device=embeds[0].device)
    for sample, length in enumerate(lengths):
        span = slice(0, length) if padding_side == "right" else slice(total - length, total)
        inputs_embeds[sample, span] = embeds[sample]
        attention_mask[sample, span] = 1
        position_ids[sample, span] = torch.arange(length, device=embeds[0].device)
        if labels is not None:
            padded_labels[sample, span] = labels[sample]
    return SplicedBatch(inputs_embeds, attention_mask, padded_labels if labels is not None else None, position_ids)
