"""InstructModule: instruction tuning of GrokMLLM (LoRA or full fine-tuning + projectors/fusion) with Lightning."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from grok.grounding.config import GroundingSettings, knowledge_base_of, quantity_tokens_of
from grok.grounding.conversation import ConversationGrounding
from grok.grounding.readout import RidgeReadout, out_of_fold_estimates
from grok.grounding.render import ReportRenderer
from grok.grounding.values import QuantityStatistics
from grok.knowledge.writer import ReportWriter
from grok.mllm.build import GroundingParts, build_grok_mllm, build_vocabulary, frozen_checksum
from grok.mllm.chat import DEFAULT_SYSTEM_PROMPT
from grok.mllm.datamodule import image_paths
from grok.mllm.encoders import transform_settings
from grok.mllm.feature_cache import cached_features, encoder_fingerprint
from grok.models.encoders.checkpoints import CheckpointMismatchError

log = logging.getLogger(__name__)


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def grounding_parts(grounding: Mapping[str, Any] | None, statistics: str | None) -> GroundingParts | None:
    """Settings, quantity tokens and training statistics of a `grounding` node (None for grounding=none).

    `statistics` is the training split's instruction JSONL (statistics computed over its eyes) or an export's
    `quantity_statistics.json`.
    """
    settings = GroundingSettings.from_config(grounding)
    if settings is None:
        return None
    kb = knowledge_base_of(settings)
    conversation = ConversationGrounding(quantity_tokens_of(settings, kb), kb, tolerance=settings.match_tolerance)
    if not statistics:
        raise ValueError("grounding needs model.grounding_statistics (the training instruction JSONL)")
    if str(statistics).endswith(".json"):
        stats = QuantityStatistics.load(statistics, conversation.tokens)
    else:
        from grok.mllm.instructions import read_instructions

        stats = QuantityStatistics.from_records(read_instructions(statistics), conversation.tokens)
    return GroundingParts(settings, conversation, stats)


class InstructModule(L.LightningModule):
    """Trains the language model's adaptation (LoRA adapter, or every weight under `adaptation=full`), projectors and
    fusion of a GrokMLLM; encoders (and, with LoRA, base weights) stay frozen.

    Learning rates: `learning_rates.language_model` for the trainable language-model weights (LoRA factors and peft
    `modules_to_save`, or all of them under `adaptation=full`), `learning_rates.fusion` for projectors/fusion, and
    `learning_rates.overrides` ({parameter-name prefix: lr}, e.g. the paper's 2e-5 for `fusion.cfp_projector`).
    Checkpoints hold only trainable parameters (plus the vocabulary map); frozen weights are rebuilt from the config
    (files or `init_seed`) and checked against the checksum stored in the checkpoint.
    """

    def __init__(
        self,
        tokenizer: Any,
        llm: Mapping[str, Any],
        adaptation: Mapping[str, Any],
        oct_encoder: Any,
        cfp_encoder: Any,
        fusion: Callable[..., torch.nn.Module],
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        learning_rates: Mapping[str, Any] | None = None,
        weight_decay: float = 0.0,
        warmup_ratio: float = 0.0,
        vocabulary: Mapping[str, Any] | None = None,
        system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
        freeze_encoders: bool = True,
        loss_chunk_size: int | None = None,
        gradient_checkpointing: bool = False,
        init_seed: int | None = 0,
        feature_cache: Mapping[str, Any] | None = None,
        grounding: Mapping[str, Any] | None = None,
        grounding_statistics: str | None = None,
        clinical_validation: Mapping[str, Any] | None = None,
        oct_slices: Any = None,
        slice_aggregator: Callable[..., torch.nn.Module] | None = None,
    ) -> None:
        super().__init__()
        if "lora" in (learning_rates or {}):
            raise ValueError(
                "model.learning_rates.lora was renamed model.learning_rates.language_model (the rate of the LoRA "
                "adapter, or of every language-model weight under adaptation=full)"
            )
        # plain containers only: Lightning reloads checkpoints with torch.load(weights_only=True)
        self.save_hyperparameters(
            {
                "llm": _plain(llm),
                "adaptation": _plain(adaptation),
                "learning_rates": _plain(learning_rates),
                "weight_decay": weight_decay,
                "warmup_ratio": warmup_ratio,
                "vocabulary": _plain(vocabulary),
                "system_prompt": system_prompt,
                "freeze_encoders": freeze_encoders,
                "init_seed": init_seed,
                "grounding": _plain(grounding),
                "oct_slices": _plain(oct_slices),
            }
        )
        self.tokenizer = tokenizer
        self.grounding_parts = grounding_parts(_plain(grounding), grounding_statistics)
        conversation = self.grounding_parts.conversation if self.grounding_parts else None
        vocabulary_options = dict(_plain(vocabulary) or {"trim": False})
        self.model = build_grok_mllm(
            tokenizer,
            llm=_plain(llm),
            adaptation=_plain(adaptation),
            encoders={"oct": oct_encoder, "cfp": cfp_encoder},
            fusion=fusion,
            vocabulary=build_vocabulary(
                tokenizer, system_prompt=system_prompt, grounding=conversation, **vocabulary_options
            ),
            freeze_encoders=freeze_encoders,
            loss_chunk_size=loss_chunk_size,
            gradient_checkpointing=gradient_checkpointing,
            init_seed=init_seed,
            grounding=self.grounding_parts,
            oct_slices=_plain(oct_slices),
            slice_aggregator=slice_aggregator,
        )
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.learning_rates = dict(_plain(learning_rates) or {})
        self.weight_decay = weight_decay
        self.warmup_ratio = warmup_ratio
        self.feature_cache = dict(_plain(feature_cache) or {"enabled": False})
        self.clinical_validation = dict(_plain(clinical_validation) or {"enabled": False})
        self._clinical_prompts: Any = None
        self.strict_loading = False  # checkpoints hold only trainable parameters

    # ---- data --------------------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        """Serve cached features (`cache_features`); at fit, fit the ridge read-out (`fit_readout`)."""
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        self.cache_features(datamodule)
        if stage == "fit" and datamodule is not None:
            self.fit_readout(datamodule)

    def cache_features(self, datamodule: Any) -> None:
        """With `feature_cache.enabled`, encode every image once (or read the cache) and serve features instead."""
        if not self.feature_cache.get("enabled") or datamodule is None or not self.model.freeze_encoders:
            return
        directory = Path(self.feature_cache["dir"])
        # every split shares the image root; the evaluation transforms (cached features are never augmented)
        loader = datamodule.datasets.get("val") or next(iter(datamodule.datasets.values()))
        for modality, encoder in self.model.encoders.items():
            settings = transform_settings(encoder, modality)
            slices = getattr(datamodule, "oct_slices", None) if modality == "oct" else None
            if slices is not None:  # a volume's chosen B-scans: [S, N, D] per image, keyed by the selection too
                settings["slices"] = slices
            fingerprint = encoder_fingerprint(encoder, settings)
            features = cached_features(
                lambda pixels, m=modality: self.model.encode_images(m, pixels),
                datamodule.image_items(modality),
                lambda key, m=modality: loader.load_image(m, key),
                directory / f"{modality}-{fingerprint}.safetensors",
                batch_size=int(self.feature_cache.get("batch_size", 32)),
                description=f"caching {modality} features",
            )
            datamodule.attach_features(modality, features)

    def fit_readout(self, datamodule: Any) -> None:
        """Fit the ridge read-out heads (`grounding.readout=ridge`) on the training eyes' frozen tokens and their own
        table values, once, before training (the encoders are frozen, so the fit cannot go stale)."""
        grounding = self.model.grounding
        if grounding is None or not any(isinstance(h, RidgeReadout) for h in grounding.readout.values()):
            if grounding is not None and grounding.finding_readout is not None:
                raise ValueError(
                    "grounding.qualitative=finding_readout reads the ridge read-out: set grounding.readout=ridge"
                )
            return
        if "train" not in getattr(datamodule, "datasets", {}):
            return
        dataset = datamodule.datasets["train"]
        tokens: dict[str, list[torch.Tensor]] = {m: [] for m in grounding.readout}
        rows: dict[str, list[int]] = {m: [] for m in grounding.readout}
        seen: dict[str, set[str]] = {m: set() for m in grounding.readout}
        for index, record in enumerate(dataset.records):
            for modality in grounding.readout:
                for path in image_paths(record, modality):
                    if path in seen[modality]:
                        continue
                    seen[modality].add(path)
                    if modality in dataset.features:
                        tokens[modality].append(dataset.features[modality][path])
                    else:
                        pixels = dataset.load_image(modality, path)[None].to(self.device)
                        tokens[modality].append(self.model.encode_images(modality, pixels)[0].cpu())
                    rows[modality].append(index)
        values = torch.tensor(np.stack([table["quantity_values"] for table in dataset.tables]))
        encoded = {m: (torch.stack(t), torch.tensor(rows[m])) for m, t in tokens.items() if t}
        fitted = grounding.fit_ridge_readouts(encoded, values, self.grounding_parts.settings.ridge_alphas)
        log.info("ridge read-out fitted on %s training images", {m: len(rows[m]) for m in fitted})
        if grounding.finding_readout is not None:
            findings = [(record.get("facts") or {}).get("findings") for record in dataset.records]
            judged = torch.tensor([[f in (found or ()) for f in grounding.decider.finding_ids] for found in findings])
            judged_rows = torch.tensor([f is not None for f in findings])
            subjects = [str(r.get("eye_id") or r.get("id")).partition("_")[0] for r in dataset.records]
            self.fit_finding_readout(encoded, values, dataset.tables, judged.float(), judged_rows, subjects)

    def fit_finding_readout(
        self,
        encoded: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
        values: torch.Tensor,
        tables: Sequence[Mapping[str, Any]],
        findings: torch.Tensor,
        judged: torch.Tensor,
        subjects: Sequence[str],
    ) -> None:
        """Fit the finding read-out (`grounding.qualitative=finding_readout`) on the training eyes' values in force as
        inference sees them: the ridge read-out's out-of-fold estimates of what the images measure (an image is never
        estimated by a fit that saw it), the table's other (stated) values; the targets are stage one's findings
        (`findings` [R, F] 0/1, on the records `judged` whose facts list them), and each finding's classifier decides
        only where its cross-validated F1 beats the rules' on the same values; every fold keeps a subject's eyes
        together (`subjects`, per record)."""
        grounding, settings = self.model.grounding, self.grounding_parts.settings
        inputs = values.clone().float()
        has_image = torch.zeros(len(values), dtype=torch.bool)
        for modality in grounding.image_keys:
            inputs[:, getattr(grounding, f"{modality}_keys").cpu()] = math.nan
        for modality, (tokens, rows) in encoded.items():
            keys = getattr(grounding, f"{modality}_keys").cpu()
            mean, std = grounding.mean[keys].cpu(), grounding.std[keys].cpu()
            targets = (values[rows][:, keys].float() - mean) / std
            folds = settings.finding_readout_folds
            if folds >= 2:  # both eyes of a subject in one fold
                groups = [subjects[int(row)] for row in rows]
                z = out_of_fold_estimates(tokens.float().cpu(), targets, settings.ridge_alphas, folds, groups)
            else:
                z = grounding.ridge_readout[modality](tokens.float().cpu())
            inputs[rows[:, None], keys[None, :]] = grounding.bounded(z.float() * std + mean, keys)
            has_image[rows] = True
        used = has_image & judged
        sexes = [table.get("quantity_sex") for table, keep in zip(tables, used.tolist(), strict=True) if keep]
        decided = grounding.fit_finding_readout(
            inputs[used],
            sexes,
            findings[used],
            settings.finding_readout_cs,
            settings.finding_readout_cv,
            settings.finding_readout_select,
            [subject for subject, keep in zip(subjects, used.tolist(), strict=True) if keep],
            settings.finding_readout_modality_dropout,
        )
        log.info("finding read-out fitted on %d training eyes: it decides %d findings", int(used.sum()), decided)
        readout = grounding.finding_readout
        for finding, (classifier, rules), chosen in zip(
            grounding.decider.finding_ids, readout.cv_f1.tolist(), readout.fitted.tolist(), strict=True
        ):
            if math.isnan(classifier):  # no classifier: a systemic finding, or too few cases
                continue
            log.info("  %s: cross-validated F1 %.3f (classifier) vs %.3f (rules) -> %s", finding, classifier, rules,
                     "classifier" if chosen else "rules")  # fmt: skip

    def on_train_epoch_start(self) -> None:
        """Counterfactual training records are drawn afresh each epoch (grok.grounding.counterfactual)."""
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and "train" in getattr(datamodule, "datasets", {}):
            datamodule.datasets["train"].epoch = self.current_epoch

    # ---- steps -------------------------------------------------------------------------------------------------
    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        output = self.model(batch)
        size = batch["input_ids"].shape[0]
        self.log("train/loss", output["loss"], prog_bar=True, batch_size=size)
        self.log("train/tokens", output["tokens"].float(), reduce_fx="sum", batch_size=size)
        if "readout_loss" in output:
            self.log("train/lm_loss", output["lm_loss"], batch_size=size)
            self.log("train/readout_loss", output["readout_loss"], batch_size=size)
        if "judgement_loss" in output:
            self.log("train/judgement_loss", output["judgement_loss"], batch_size=size)
        return output["loss"]

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        output = self.model(batch)
        size = batch["input_ids"].shape[0]
        self.log("val/loss", output["loss"], prog_bar=True, sync_dist=True, batch_size=size)
        if "readout_loss" in output:
            self.log("val/lm_loss", output["lm_loss"], sync_dist=True, batch_size=size)
            self.log("val/readout_loss", output["readout_loss"], sync_dist=True, batch_size=size)
        if "judgement_loss" in output:
            self.log("val/judgement_loss", output["judgement_loss"], sync_dist=True, batch_size=size)

    def on_validation_epoch_end(self) -> None:
        """With `clinical_validation.enabled`: greedy reports for the val split's report prompts, read by the
        benchmark: `val/macro_f1` (their diagnoses against the records' labels) and `val/clinical_score` (task 3's
        mean of quantitative accuracy, finding F1, consistency and correctness against the records' facts)."""
        settings = self.clinical_validation
        if not settings.get("enabled") or self._trainer is None or self.trainer.sanity_checking:
            return
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None:
            return
        if self._clinical_prompts is None:
            self._clinical_prompts = datamodule.build_dataset(
                settings.get("split", "val"), generation=True, tasks=["report"], limit=settings.get("max_reports")
            )
        for name, value in self.clinical_metrics(self._clinical_prompts).items():
            self.log(f"val/{name}", value, prog_bar=name == "macro_f1", sync_dist=True)

    def clinical_metrics(self, prompts: Any) -> dict[str, float]:
        """`macro_f1` (diagnoses, the benchmark's parser and metric) and `clinical_score` (task 3, `ClinicalScorer`)
        of greedy reports for a generation dataset."""
        from grok.bench.classification import classification_metrics
        from grok.bench.clinical import ClinicalScorer
        from grok.bench.diagnosis import parse_diagnosis
        from grok.bench.references import Reference
        from grok.bench.text import AnalysedText
        from grok.bench.vocabulary import build_vocabulary
        from grok.knowledge.parser import load_knowledge_base
        from grok.mllm.generate import generate_reports

        settings = self.clinical_validation
        kb = self.grounding_parts.conversation.kb if self.grounding_parts else load_knowledge_base()
        vocabulary = build_vocabulary(kb.schema, kb)
        grounding = self.grounding_parts.settings if self.grounding_parts else None
        was_training = self.model.training
        rows = generate_reports(
            self.model,
            self.tokenizer,
            prompts,
            batch_size=int(settings.get("batch_size", 32)),
            settings={"max_new_tokens": int(settings.get("max_new_tokens", 1536))},
            device=self.device,
            progress=False,
            renderer=self.renderer,
            source=grounding.source if grounding else None,
            forbid_digits=bool(grounding and grounding.forbid_digits),
        )
        analysed = {row["id"]: AnalysedText(row["prediction"], vocabulary) for row in rows}
        self.model.train(was_training)
        scorer = ClinicalScorer(vocabulary, kb)
        guesses, scores = [], []
        for record in prompts.records:
            text = analysed[record.get("id")]
            parse = parse_diagnosis(text)
            guesses.append(list(parse.labels))
            reference = Reference(record.get("id"), "", tuple(record.get("labels") or ()), record.get("facts") or {})
            scores.append(scorer.score(reference, text, parse).score)
        truth = [list(record.get("labels") or []) for record in prompts.records]
        macro_f1 = float(classification_metrics(truth, guesses, kb.schema.label_names)["macro_f1"])
        return {"macro_f1": macro_f1, "clinical_score": float(sum(scores) / max(len(scores), 1))}

    @property
    def renderer(self) -> ReportRenderer | None:
        """Writes this model's generated quantity tokens as text (None without grounding)."""
        parts = self.grounding_parts
        if parts is None:
            return None
        writer = ReportWriter(parts.conversation.kb) if parts.settings.qualitative == "finding_readout" else None
        return ReportRenderer(
            self.tokenizer, parts.tokens, parts.conversation.kb, parts.settings.estimate_marker, writer=writer
        )

    # ---- optimisation ------------------------------------------------------------------------------------------
    def parameter_groups(self) -> list[dict[str, Any]]:
        """Trainable parameters grouped by learning rate: the language model's (LoRA, saved modules, or all of it under
        `adaptation=full`), fusion/projectors, and prefix overrides."""
        overrides: Mapping[str, float] = self.learning_rates.get("overrides") or {}
        groups: dict[float, list[torch.nn.Parameter]] = {}
        for name, parameter in self.model.named_parameters():
            if not parameter.requires_grad:
                continue
            # LoRA factors, peft's saved modules, or every weight under adaptation=full: the language model's rate
            in_language_model = name.startswith("language_model.")
            lr = self.learning_rates.get("language_model" if in_language_model else "fusion")
            for prefix, override in overrides.items():
                if name.startswith(prefix):
                    lr = override
            if lr is None:
                raise ValueError(f"no learning rate for trainable parameter {name} (model.learning_rates)")
            groups.setdefault(float(lr), []).append(parameter)
        return [{"params": params, "lr": lr, "weight_decay": self.weight_decay} for lr, params in groups.items()]

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(params=self.parameter_groups())
        if self.scheduler_factory is None:
            return optimizer
        total = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = self.scheduler_factory(
            optimizer, num_warmup_steps=math.ceil(self.warmup_ratio * total), num_training_steps=total
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ---- checkpoints -------------------------------------------------------------------------------------------
    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Trainable parameters, the fusion's buffers (e.g. normalisation statistics) and the vocabulary map: what a
        checkpoint needs beyond the config."""
        state = self.state_dict()
        trainable = {f"model.{name}" for name, p in self.model.named_parameters() if p.requires_grad}
        trainable |= {f"model.fusion.{name}" for name, _ in self.model.fusion.named_buffers()}
        if self.model.grounding is not None:  # the fitted ridge read-out (persistent buffers)
            trainable |= {f"model.grounding.{name}" for name in self.model.grounding.state_dict()}
        return {key: value for key, value in state.items() if key in trainable or ".vocabulary." in key}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["state_dict"] = self.trainable_state_dict()
        checkpoint["grok_frozen_checksum"] = frozen_checksum(self.model)

    def _checkpoint_name(self) -> str:
        """The checkpoint being restored (`ckpt_path`), for error messages."""
        trainer = self._trainer
        return str(getattr(trainer, "ckpt_path", None) or "ckpt_path") if trainer is not None else "ckpt_path"

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        missing = sorted(set(self.trainable_state_dict()) - set(checkpoint.get("state_dict", {})))
        if missing:
            raise CheckpointMismatchError(
                f"{self._checkpoint_name()}: the checkpoint lacks {len(missing)} trainable weight(s) of this model "
                f"(e.g. {missing[0]}): it was trained with another language-model adaptation or architecture "
                "(adaptation=lora vs full, adaptation.r, llm.config, fusion; a checkpoint from before the finding "
                "read-out lacks model.grounding.finding_readout.*: grounding.qualitative=language_model); resume with "
                "the settings it was trained with"
            )
        expected, actual = checkpoint.get("grok_frozen_checksum"), frozen_checksum(self.model)
        if expected is not None and not math.isclose(expected, actual, rel_tol=1e-6):
            raise CheckpointMismatchError(
                f"{self._checkpoint_name()}: the frozen weights built from this config (checksum {actual:.6g}) differ "
                f"from those the checkpoint was trained with ({expected:.6g}): check llm.pretrained_path, the encoder "
                "exports and init_seed"
            )
