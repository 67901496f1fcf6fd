"""Vocabulary trimming: keep the real Qwen2 ids but map the ones a corpus uses onto a compact embedding table.

On a CPU the 151,936-row output head dominates a tiny model's step; the tiny default keeps Qwen2's tokenisation and
maps the ids its training corpus uses (plus ChatML specials and placeholders) into a compact table. Everything outside
the model speaks real Qwen2 ids; ids absent from the table map to the padding token (`<|endoftext|>`: the fallback row).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from grok.mllm.tokenizer import IM_END, IM_START, IMAGE_PLACEHOLDERS


class VocabularyMap(nn.Module):
    """Bidirectional map real token id <-> compact row, held as buffers so it travels with checkpoints."""

    def __init__(self, kept_ids: Iterable[int], real_vocab_size: int, fallback_id: int) -> None:
        super().__init__()
        kept = sorted({int(i) for i in kept_ids} | {int(fallback_id)})
        if kept[-1] >= real_vocab_size:
            raise ValueError(f"kept token id {kept[-1]} is outside the tokenizer's {real_vocab_size} ids")
        compact_to_real = torch.tensor(kept, dtype=torch.long)
        real_to_compact = torch.full((real_vocab_size,), -1, dtype=torch.long)
        real_to_compact[compact_to_real] = torch.arange(len(kept))
        real_to_compact[real_to_compact < 0] = real_to_compact[fallback_id]
        self.register_buffer("compact_to_real", compact_to_real, persistent=True)
        self.register_buffer("real_to_compact", real_to_compact, persistent=True)
        self.fallback_id = int(fallback_id)

    @property
    def size(self) -> int:
        """Rows of the compact table."""
        return int(self.compact_to_real.numel())

    def to_compact(self, real_ids: torch.Tensor) -> torch.Tensor:
        """Real ids -> compact rows (negative ids such as IGNORE_INDEX pass through unchanged)."""
        table = self.real_to_compact.to(real_ids.device)
        return torch.where(real_ids >= 0, table[real_ids.clamp(min=0)], real_ids)

    def to_real(self, compact_ids: torch.Tensor) -> torch.Tensor:
        """Compact rows -> real Qwen2 ids (negative ids pass through)."""
        table = self.compact_to_real.to(compact_ids.device)
        return torch.where(compact_ids >= 0, table[compact_ids.clamp(min=0)], compact_ids)

    def save(self, path: str | Path) -> None:
        """Write the kept real ids as JSON (`vocab_map.json` next to an exported model)."""
        payload = {
            "kept_ids": self.compact_to_real.tolist(),
            "real_vocab_size": int(self.real_to_compact.numel()),
            "fallback_id": self.fallback_id,
        }
        Path(path).write_text(json.dumps(payload))

    @classmethod
    def load(cls, path: str | Path) -> VocabularyMap:
        """Read a map written by `save`."""
        payload = json.loads(Path(path).read_text())
        return cls(payload["kept_ids"], payload["real_vocab_size"], payload["fallback_id"])


def corpus_token_ids(tokenizer: PreTrainedTokenizerBase, texts: Iterable[str], batch_size: int = 1024) -> set[int]:
    """Every token id the tokenizer produces on `texts`."""
    used: set[int] = set()
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) == batch_size:
            used.update(i for ids in tokenizer(batch, add_special_tokens=False)["input_ids"] for i in ids)
            batch = []
    if batch:
        used.update(i for ids in tokenizer(batch, add_special_tokens=False)["input_ids"] for i in ids)
    return used


def build_vocabulary_map(
    tokenizer: PreTrainedTokenizerBase,
    texts: Iterable[str],
    extra_texts: Iterable[str] = (),
    extra_tokens: Iterable[str] = (),
) -> VocabularyMap:
    """A map keeping ChatML specials, image placeholders, `extra_tokens` (quantity tokens), role headers,
    `extra_texts` and every id used by `texts`."""
    specials = [tokenizer.pad_token, IM_START, IM_END, *IMAGE_PLACEHOLDERS, *extra_tokens]
    kept = set(tokenizer.convert_tokens_to_ids(specials))
    kept |= corpus_token_ids(tokenizer, ["system\n", "user\n", "assistant\n", "\n", *extra_texts])
    kept |= corpus_token_ids(tokenizer, texts)
    return VocabularyMap(kept, real_vocab_size=len(tokenizer), fallback_id=tokenizer.pad_token_id)
