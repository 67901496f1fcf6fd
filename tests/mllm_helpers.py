"""Small instruction datasets in the stage-one format (contract 5) and config overrides for fast MLLM tests."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
from PIL import Image

LABELS = ("AMD", "Glaucoma", "Normal")


def write_instruction_fixture(root: Path, eyes_per_split: int = 8, seed: int = 0) -> Path:
    """Write `{train,val,test}.jsonl` + `manifest.json` + images under `root`; return the instructions folder.

    The OCT brightness and the CFP colour carry the label, so a model can learn it from the images alone.
    Records mix both images, OCT only, CFP only, and a two-turn conversation.
    """
    rng = random.Random(seed)
    images = root / "images"
    (images / "oct").mkdir(parents=True, exist_ok=True)
    (images / "cfp").mkdir(parents=True, exist_ok=True)
    out = root / "instructions"
    out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val", "test"):
        lines = []
        for index in range(eyes_per_split):
            eye_id = f"S{split[:2]}{index:03d}_R"
            label = LABELS[index % len(LABELS)]
            oct_level = {"AMD": 220, "Glaucoma": 90, "Normal": 140}[label]
            cfp_colour = {"AMD": (200, 80, 40), "Glaucoma": (60, 60, 200), "Normal": (120, 160, 60)}[label]
            noise = np.random.default_rng(rng.randrange(10**6)).integers(0, 30, (64, 64))
            Image.fromarray(np.clip(oct_level + noise, 0, 255).astype(np.uint8), "L").save(
                images / "oct" / f"{eye_id}.png"
            )
            Image.fromarray(np.full((64, 64, 3), cfp_colour, dtype=np.uint8), "RGB").save(
                images / "cfp" / f"{eye_id}.png"
            )
            age = rng.randint(40, 80)
            report = f"Quantitative analysis: thickness normal.\nConclusion: {label}."
            kind = index % 4 if split != "test" else 0
            record_images = {"oct": f"oct/{eye_id}.png", "cfp": f"cfp/{eye_id}.png"}
            prefix = "<oct>\n<cfp>\n"
            if kind == 1:
                record_images, prefix = {"oct": f"oct/{eye_id}.png"}, "<oct>\n"
            elif kind == 2:
                record_images, prefix = {"cfp": f"cfp/{eye_id}.png"}, "<cfp>\n"
            conversation = [
                {"from": "human", "value": f"{prefix}Age {age}, sex F. Write the diagnostic report."},
                {"from": "gpt", "value": report},
            ]
            if kind == 3:
                conversation += [
                    {"from": "human", "value": "What is the diagnosis?"},
                    {"from": "gpt", "value": f"{label}."},
                ]
            lines.append(
                {
                    "id": eye_id,
                    "eye_id": eye_id,
                    "split": split,
                    "task": "report" if kind != 3 else "multiturn",
                    "style": "structured",
                    "images": record_images,
                    "conversations": conversation,
                    "labels": [label],
                    "facts": {"diagnoses": [label]},
                }
            )
        (out / f"{split}.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (out / "manifest.json").write_text(json.dumps({"image_root": str(images)}))
    return out


def tiny_overrides(instructions_dir: Path, extra: list[str] | None = None) -> list[str]:
    """Overrides shrinking `mllm` to seconds: fixture data, un-aligned tiny OCT encoder, small batches, no logger.

    LoRA (`adaptation=lora`) unless `extra` picks another `adaptation/` option: most tests exercise the peft machinery
    of the paper's setting; the tiny default's full fine-tuning (`adaptation=full`) has tests of its own.
    """
    extra = list(extra or [])
    chosen = [item.split("=", 1)[1] for item in extra if item.startswith("adaptation=")]
    adaptation = [] if chosen else ["adaptation=lora"]
    if (chosen or ["lora"])[-1] in ("lora", "qlora"):  # a small adapter (full/frozen have no rank)
        adaptation += ["adaptation.r=4", "adaptation.alpha=8"]
    return [
        *adaptation,
        f"paths.instructions_dir={instructions_dir}",
        "oct_encoder.allow_unaligned=true",
        "oct_encoder.architecture.embed_dim=32",
        "oct_encoder.architecture.depth=1",
        "oct_encoder.transform.image_size=32",
        "oct_encoder.architecture.img_size=32",
        "cfp_encoder.architecture.embed_dim=32",
        "cfp_encoder.architecture.depth=1",
        "cfp_encoder.architecture.img_size=32",
        "cfp_encoder.transform.image_size=32",
        "llm.config.hidden_size=32",
        "llm.config.intermediate_size=64",
        "llm.config.num_hidden_layers=1",
        "data.batch_size=4",
        "data.eval_batch_size=4",
        "logger=csv",
        "trainer.max_epochs=1",
        *extra,
    ]
