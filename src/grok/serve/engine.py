"""The server's one adapter to the GROK MLLM: load an export once, turn cases into prompts, generate in batches.

Everything the HTTP layer needs from the model goes through `ReportEngine`: loading (`load_exported_mllm`), prompt
building (a biomarker row becomes stage one's report prompt, or a chat conversation is taken as it is), the
tokenised item with its images (`InstructionDataset`), batched generation (`InstructCollator` + `GrokMLLM.generate`,
left padding, KV cache) with per-row token streaming, and decoding. When generation starts returning grounded
quantities, only this module changes: `Generated.grounding` is already passed through to the API and the page.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from transformers.generation.streamers import BaseStreamer

from grok.grounding.spans import first_turns
from grok.knowledge.instructions import image_prefix
from grok.mllm.collator import InstructCollator
from grok.mllm.datamodule import InstructionDataset, conversation_grounding, image_transforms
from grok.mllm.export import load_exported_mllm
from grok.mllm.generate import NumberGuard, generation_options, section_stops
from grok.mllm.model import MODALITIES
from grok.mllm.tokenizer import IM_END, IMAGE_PLACEHOLDERS

TokenSink = Callable[[str], None]


class CaseError(ValueError):
    """A case the model cannot take (an image it cannot read, a prompt over the limit); `part` names what."""

    def __init__(self, part: str, message: str) -> None:
        self.part = part  # "images.<modality>", "prompt" or "biomarkers"
        super().__init__(message)


@dataclass(frozen=True)
class ImageFile:
    """One uploaded image: the file's bytes and the suffix its format reads with (".png", ".jpg", ".tif")."""

    data: bytes
    suffix: str


@dataclass(frozen=True)
class Case:
    """One request to the model.

    `turns` is the conversation so far (`role`/`content`, ending with the user's turn; image placeholders are added
    by the engine); with `turns=None` the prompt is the report prompt: stage one's prompt for `biomarkers` when a
    row is given, else `default_prompt`. `system_prompt=None` keeps the export's.
    """

    images: Mapping[str, ImageFile]
    turns: Sequence[Mapping[str, str]] | None = None
    biomarkers: Mapping[str, Any] | None = None
    system_prompt: str | None = None


@dataclass(frozen=True)
class Sampling:
    """Decoding settings of one request: greedy when `temperature` is 0."""

    max_new_tokens: int
    temperature: float
    top_p: float

    @property
    def batch_key(self) -> tuple[bool, float, float]:
        """Requests with equal keys share one `generate` call (the length limit is applied per row)."""
        greedy = self.temperature == 0
        return (not greedy, 0.0 if greedy else self.temperature, 1.0 if greedy else self.top_p)


@dataclass
class PreparedCase:
    """A case as the collator takes it (token ids, preprocessed images) and its prompt length."""

    item: dict[str, Any]
    prompt_tokens: int
    text_tokens: int


@dataclass
class Generated:
    """One generated reply: the text, token counts, why it stopped and, when the model gives it, its grounding."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (end of turn) | "length" (max_new_tokens reached)
    grounding: dict[str, Any] | None = None


@dataclass
class _Detokenizer:
    """Turns one row's stream of token ids into text deltas, up to its end of turn or length limit."""

    tokenizer: Any
    eos_id: int
    limit: int
    emit: TokenSink
    cache: list[int] = field(default_factory=list)
    printed: int = 0
    count: int = 0
    started: bool = False
    done: bool = False
    quantity_text: Callable[[int], str | None] | None = None  # grounding: a quantity token's written value

    def __call__(self, token_id: int) -> None:
        if self.done:
            return
        if token_id == self.eos_id or self.count >= self.limit:
            self.done = True
            return
        self.count += 1
        written = self.quantity_text(token_id) if self.quantity_text is not None else None
        if written is not None:  # a quantity token: its value as the report writes it, then a fresh window
            self.cache, self.printed = [], 0
            self.started = True
            self.emit(written)
            return
        self.cache.append(token_id)
        text = self.tokenizer.decode(self.cache, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for its last byte
            return
        delta = text[self.printed :]
        if text.endswith("\n"):  # bound the re-decoding: start a new window after each line
            self.cache, self.printed = [], 0
        else:
            self.printed = len(text)
        if not self.started:
            delta = delta.lstrip()
            self.started = bool(delta)
        if delta:
            self.emit(delta)


class _BatchStreamer(BaseStreamer):
    """transformers' streamer hook: each decoding step's tokens of the whole batch, passed on per row."""

    def __init__(
        self,
        to_real: Callable[[torch.Tensor], torch.Tensor],
        rows: Sequence[_Detokenizer | None],
        renderer: Any = None,
    ) -> None:
        self.to_real = to_real
        self.rows = rows
        self.renderer = renderer

    def set_quantities(self, quantities: Any) -> None:
        """Called by `GrokMLLM.generate` with the values in force: each row writes its quantity tokens from them."""
        if quantities is None or self.renderer is None:
            return
        arrays = [t.tolist() for t in (quantities.values, quantities.source, quantities.low, quantities.high)]
        estimates = quantities.estimates.tolist()
        for index, row in enumerate(self.rows):
            if row is not None:
                sample = [array[index] for array in arrays]
                row.quantity_text = self._writer(sample, estimates[index])

    def _writer(self, sample: list, estimates: list) -> Callable[[int], str | None]:
        def written(token_id: int) -> str | None:
            if token_id not in self.renderer.symbol_of_id:
                return None
            return self.renderer.render([token_id], *sample, estimates)[0]

        return written

    def put(self, value: torch.Tensor) -> None:
        if value.dim() != 1:  # the prompt (empty: generation starts from embeddings)
            return
        for row, token in zip(self.rows, self.to_real(value).tolist(), strict=True):
            if row is not None:
                row(int(token))

    def end(self) -> None:
        """Nothing to flush: each row stops at its end of turn."""


class ReportEngine:
    """A GROK MLLM export loaded once, serving batched generation."""

    def __init__(
        self,
        model_dir: str | Path,
        device: str,
        default_prompt: str,
        knowledge_base: str | None = None,
        generation: Mapping[str, Any] | None = None,
        scratch_dir: str | None = None,
    ) -> None:
        self.model_dir = Path(model_dir)
        # uploads are written here for the readers of grok.data.io (one folder per request, removed at once)
        shm = Path("/dev/shm")
        self.scratch_dir = scratch_dir or (str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None)
        module, train_cfg = load_exported_mllm(self.model_dir)
        if train_cfg.data.get("oct_slices") is not None:
            raise ValueError(
                f"{self.model_dir}: this export reads OCT volumes (data.oct_slices={train_cfg.data.oct_slices}); "
                "grok-serve takes single images: report on volumes with grok-infer"
            )
        self.model = module.model.eval().to(device)
        self.tokenizer = module.tokenizer
        self.renderer = module.renderer  # grounded exports write quantity tokens from their values
        self.grounding = conversation_grounding(train_cfg.model.get("grounding"))
        parts = module.grounding_parts
        self.source = parts.settings.source if parts is not None else None
        self.number_guard = NumberGuard(self.tokenizer) if parts is not None and parts.settings.forbid_digits else None
        self.grounded_kb = parts.conversation.kb if parts is not None else None
        self.device = torch.device(device)
        self.default_prompt = default_prompt
        self.system_prompt = train_cfg.get("system_prompt")
        self.knowledge_base = knowledge_base
        saved = OmegaConf.to_container(train_cfg.get("generation") or DictConfig({}))
        overrides = {key: value for key, value in (generation or {}).items() if value is not None}
        self.generation = generation_options({**saved, **overrides})
        self.transforms = image_transforms(train_cfg.data.image_transforms)
        self.modalities = tuple(m for m in MODALITIES if m in self.model.encoders and m in self.transforms)
        self.eos_id = self.tokenizer.convert_tokens_to_ids(IM_END)
        self.pad_id = self.tokenizer.pad_token_id
        self.collator = InstructCollator(self.tokenizer.pad_token_id, "left")
        self.reserved_tokens = tuple(sorted(set(self.tokenizer.all_special_tokens) | set(IMAGE_PLACEHOLDERS)))
        self.visual_tokens_per_image = self._visual_token_counts()
        self.record_factory = self._record_factory(knowledge_base, self.grounded_kb)

    @classmethod
    def from_config(cls, cfg: DictConfig) -> ReportEngine:
        """The engine a composed `serve` config describes (conf/serve.yaml)."""
        return cls(
            cfg.model_dir,
            device=cfg.device,
            default_prompt=cfg.prompt.default,
            knowledge_base=cfg.prompt.knowledge_base,
            generation=OmegaConf.to_container(cfg.generation),
            scratch_dir=cfg.scratch_dir,
        )

    # ------------------------------------------------------------------------------------------------ prompts
    def default_sampling(self) -> Sampling:
        """The export's decoding settings (conf/mllm.yaml `generation`, overridden by the server's config)."""
        options = self.generation
        greedy = not options["do_sample"]
        return Sampling(
            options["max_new_tokens"], 0.0 if greedy else options["temperature"], 1.0 if greedy else options["top_p"]
        )

    def prepare(self, case: Case) -> PreparedCase:
        """Tokenise the case and read its images (raises `CaseError` naming the part at fault)."""
        unknown = [m for m in case.images if m not in self.modalities]
        if unknown:
            raise CaseError(f"images.{unknown[0]}", f"this export has no {unknown[0].upper()} encoder")
        with tempfile.TemporaryDirectory(prefix="grok-serve-", dir=self.scratch_dir) as folder:
            paths = {}
            for modality, image in case.images.items():
                paths[modality] = f"{modality}{image.suffix}"
                (Path(folder) / paths[modality]).write_bytes(image.data)
            record = self._record(case, paths)
            try:
                dataset = InstructionDataset(
                    [record],
                    self.tokenizer,
                    folder,
                    self.transforms,
                    system_prompt=case.system_prompt or self.system_prompt,
                    max_length=None,
                    generation=True,
                    grounding=self.grounding,
                )
            except ValueError as error:  # ConversationError, InstructionFormatError
                raise CaseError("prompt", str(error)) from error
            try:
                item = dataset[0]
            except (OSError, ValueError, Image.DecompressionBombError) as error:
                where = getattr(error, "path", None)
                modality = next((m for m in case.images if where and where.name == paths[m]), next(iter(case.images)))
                reason = str(error).replace(f"{folder}/", "")  # the temporary folder means nothing to the client
                raise CaseError(f"images.{modality}", f"cannot read the {modality.upper()} image: {reason}") from error
        text_tokens = len(item["input_ids"])
        visual = sum(self.visual_tokens_per_image[m] - 1 for m in case.images)
        return PreparedCase(item=item, prompt_tokens=text_tokens + visual, text_tokens=text_tokens)

    def _record(self, case: Case, image_paths: Mapping[str, str]) -> dict[str, Any]:
        if case.turns is None and case.biomarkers:
            return self._row_record(case.biomarkers, image_paths)
        prefix = image_prefix(image_paths, self.record_factory.builder.phrases, random.Random(0))  # as stage one
        turns = [dict(turn) for turn in (case.turns or [{"role": "user", "content": self.default_prompt}])]
        first_user = next(i for i, turn in enumerate(turns) if turn["role"] == "user")
        turns[first_user]["content"] = prefix + turns[first_user]["content"]
        return {"id": "request", "images": dict(image_paths), "conversations": turns}

    def _row_record(self, row: Mapping[str, Any], image_paths: Mapping[str, str]) -> dict[str, Any]:
        """Stage one's report prompt for one biomarker row (as `grok-infer row.table=...` builds it)."""
        columns = {"oct": "oct_path", "cfp": "cfp_path"}
        full_row = {"subject_id": "request", **row, **{columns[m]: path for m, path in image_paths.items()}}
        _, lines = self.record_factory.records(full_row, f"request_{full_row['eye']}", "test")
        return first_turns(json.loads(lines[0]), 1)

    @staticmethod
    def _record_factory(knowledge_base: str | None, grounded: Any = None) -> Any:
        """Stage one's record builder for one report record per eye (the test split's plan), under the configured
        knowledge base, else a grounded export's own, else the latest."""
        from grok.knowledge import load_knowledge_base
        from grok.knowledge.generate import GenerationPlan, RecordFactory
        from grok.knowledge.instructions import InstructionBuilder
        from grok.knowledge.writer import ReportWriter

        kb = load_knowledge_base(knowledge_base) if knowledge_base or grounded is None else grounded
        plan = GenerationPlan(fractions={"test": 1.0}, mix={"test": {"report": 1}})
        return RecordFactory(kb, InstructionBuilder(ReportWriter(kb)), plan)

    @torch.no_grad()
    def _visual_token_counts(self) -> dict[str, int]:
        """Language-model positions one image of each modality takes (for usage counts)."""
        blank = {"oct": Image.new("L", (32, 32)), "cfp": Image.new("RGB", (32, 32))}
        batch: dict[str, Any] = {}
        for modality in self.modalities:
            batch[f"{modality}_pixels"] = self.transforms[modality](blank[modality])[None].to(self.device)
            batch[f"{modality}_sample_index"] = torch.zeros(1, dtype=torch.long, device=self.device)
        fused = self.model.fused_tokens(batch)
        grounding = self.model.grounding
        preamble = {m: len(grounding.image_keys.get(m, ())) if grounding and grounding.preamble else 0 for m in fused}
        return {m: int(fused[m][0].shape[1]) + preamble[m] for m in self.modalities}

    # ------------------------------------------------------------------------------------------------ generation
    @torch.no_grad()
    def generate(
        self,
        cases: Sequence[PreparedCase],
        sampling: Sampling,
        limits: Sequence[int],
        sinks: Sequence[TokenSink | None],
    ) -> list[Generated]:
        """One batched `generate` for cases sharing `sampling`; row i stops after `limits[i]` tokens and streams
        its text deltas to `sinks[i]` when given."""
        batch = self.collator([case.item for case in cases])
        batch = {key: value.to(self.device) if torch.is_tensor(value) else value for key, value in batch.items()}
        rows = [
            _Detokenizer(self.tokenizer, self.eos_id, limit, sink) if sink is not None else None
            for limit, sink in zip(limits, sinks, strict=True)
        ]
        vocabulary = self.model.vocabulary
        streamer = (
            _BatchStreamer(vocabulary.to_real if vocabulary is not None else (lambda ids: ids), rows, self.renderer)
            if any(rows)
            else None
        )
        do_sample, temperature, top_p = sampling.batch_key
        generated = self.model.generate(
            batch,
            max_new_tokens=max(limits),
            do_sample=do_sample,
            temperature=temperature,
            top_p=top_p,
            eos_token_id=self.eos_id,
            pad_token_id=self.pad_id,
            streamer=streamer,
            source=self.source,
            number_guard=self.number_guard,
            stopping_criteria=section_stops(self.model, self.tokenizer, self.renderer) or None,
        )
        quantities = generated.quantities
        results = []
        for index, (case, limit, ids) in enumerate(zip(cases, limits, generated.ids.tolist(), strict=True)):
            # the end of turn, or the padding after a row stopped at a section header (grok.mllm.generate.SectionStop)
            stop = next((i for i, token in enumerate(ids) if token in (self.eos_id, self.pad_id)), None)
            content = ids[:stop] if stop is not None else ids
            finish = "stop" if stop is not None and stop < limit else "length"
            content = content[:limit]
            completion = len(content) + (finish == "stop" and ids[stop] == self.eos_id)
            grounding = None
            if quantities is None:
                text = self.tokenizer.decode(content, skip_special_tokens=True).strip()
            else:
                q = quantities
                arrays = [t[index].tolist() for t in (q.values, q.source, q.low, q.high, q.estimates)]
                text, quoted = self.renderer.render(content, *arrays)
                if q.decisions is not None:  # the knowledge base writes the findings and the conclusion
                    streamed = text
                    text, quoted, written = self.renderer.with_decided_findings(
                        text, quoted, q.decisions[index], *arrays[:2], arrays[4], str(case.item.get("id", index))
                    )
                    if rows[index] is not None:
                        rows[index].emit(_stream_tail(streamed, text, written))
                grounding = {"source": self.source, "quantities": [entry.as_dict() for entry in quoted]}
            results.append(Generated(text, case.prompt_tokens, completion, finish, grounding))
        return results


def _stream_tail(streamed: str, text: str, written: str) -> str:
    """What a streaming client still needs once the knowledge base's writer has added `written` to the `streamed`
    text: the rest of `text` when the stream is its beginning, else the writer's section after the header the
    stream already ends with (nothing sent is repeated)."""
    if text.startswith(streamed):
        return text[len(streamed) :]
    header, _, rest = written.partition("\n")
    return "\n" + (rest if streamed.rstrip().endswith(header) else written)
