"""How well the read-out head measures each image-derived quantity, next to ridge regression and the training mean.

    .venv/bin/python experiments/mllm/readout_quality.py [--export artifacts/mllm] [--split test] [--out <dir>]

Loads a grounded export (`grok-train-mllm`, default `artifacts/mllm`), encodes every eye of the split's report
records (its frozen encoders, preprocessing without augmentation), and compares per quantity, on that split:
- the read-out head's estimates (the values `grounding.source=readout|auto` quotes),
- ridge regression fitted on the train eyes' frozen encoder tokens (every token of the image flattened, standardised;
  the regularisation chosen by cross-validation on the train eyes),
- the training mean.
Prints a Markdown table (R² and MAE per quantity, and their means) and writes it with the JSON figures to `--out`
(default: the export folder, `readout_quality.{md,json}`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import RidgeCV
from sklearn.metrics import mean_absolute_error, r2_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from grok.mllm.collator import InstructCollator
from grok.mllm.datamodule import (
    InstructionDataset,
    conversation_grounding,
    image_root_of,
    image_transforms,
    read_instructions,
)
from grok.mllm.export import load_exported_mllm


def eye_dataset(module, cfg, instructions_dir: Path, split: str) -> InstructionDataset:
    """One report record per eye of a split, as training builds its datasets."""
    records = [r for r in read_instructions(instructions_dir / f"{split}.jsonl") if r.get("task") == "report"]
    return InstructionDataset(
        records,
        module.tokenizer,
        image_root_of(instructions_dir, cfg.data.get("image_root")),
        image_transforms(cfg.data.image_transforms),
        system_prompt=cfg.get("system_prompt"),
        max_length=cfg.data.max_length,
        grounding=conversation_grounding(cfg.model.grounding),
        oct_slices=cfg.data.get("oct_slices"),
    )


@torch.no_grad()
def measure(module, dataset: InstructionDataset, batch_size: int = 32) -> dict[str, np.ndarray]:
    """Per eye: the head's estimates [n, K], the truth [n, K] and the flattened frozen tokens per modality."""
    model = module.model.eval()
    collate = InstructCollator(module.tokenizer.pad_token_id, "left")
    estimates, truth, summaries = [], [], {m: [] for m in model.encoders}
    for start in range(0, len(dataset), batch_size):
        batch = collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        estimates.append(model.readout_estimates(batch).numpy())
        truth.append(batch["quantity_values"].numpy())
        for modality in model.encoders:
            tokens = model.encode_images(modality, batch[f"{modality}_pixels"])
            summaries[modality].append(tokens.flatten(1).numpy())
    return {
        "estimates": np.concatenate(estimates),
        "truth": np.concatenate(truth),
        **{f"features_{m}": np.concatenate(v) for m, v in summaries.items()},
    }


def table(rows: list[dict], keys: list[str]) -> str:
    """The Markdown table of the figures."""
    lines = [
        "| quantity | image | n | R² head | R² ridge | R² mean | MAE head | MAE ridge | MAE mean |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['key']} | {row['image']} | {row['n']} | {row['r2_head']:.3f} | {row['r2_ridge']:.3f} | "
            f"{row['r2_mean']:.3f} | {row['mae_head']:.4g} | {row['mae_ridge']:.4g} | {row['mae_mean']:.4g} |"
        )
    mean = {k: float(np.mean([r[k] for r in rows])) for k in ("r2_head", "r2_ridge", "r2_mean")}
    lines.append(
        f"| **mean** | | | **{mean['r2_head']:.3f}** | **{mean['r2_ridge']:.3f}** | {mean['r2_mean']:.3f} |||| "
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--export", default="artifacts/mllm")
    parser.add_argument("--instructions", default=None, help="instructions folder (default: the export's config)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    module, cfg = load_exported_mllm(args.export)
    if module.model.grounding is None:
        raise SystemExit(f"{args.export} was trained with grounding=none: it has no read-out head")
    instructions = Path(args.instructions or Path(cfg.model.grounding_statistics).parent)
    if not (instructions / "train.jsonl").is_file():
        instructions = Path(cfg.data.instructions_dir)
    train = measure(module, eye_dataset(module, cfg, instructions, "train"))
    test = measure(module, eye_dataset(module, cfg, instructions, args.split))
    tokens = module.model.grounding.tokens
    rows = []
    for image, keys in module.model.grounding.image_keys.items():
        x_train, x_test = train[f"features_{image}"], test[f"features_{image}"]
        for key in keys:
            column = tokens.key_index[key]
            y_train, y_test = train["truth"][:, column], test["truth"][:, column]
            fit, known = ~np.isnan(y_train), ~np.isnan(y_test)
            if fit.sum() < 10 or known.sum() < 5:
                continue
            ridge = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-1, 5, 13)))
            ridge.fit(x_train[fit], y_train[fit])
            predictions = {
                "head": test["estimates"][known, column],
                "ridge": ridge.predict(x_test[known]),
                "mean": np.full(int(known.sum()), y_train[fit].mean()),
            }
            row = {"key": key, "image": image, "n": int(known.sum())}
            for name, predicted in predictions.items():
                row[f"r2_{name}"] = float(r2_score(y_test[known], predicted))
                row[f"mae_{name}"] = float(mean_absolute_error(y_test[known], predicted))
            rows.append(row)
    markdown = table(rows, [r["key"] for r in rows])
    print(markdown)
    out = Path(args.out or args.export)
    out.mkdir(parents=True, exist_ok=True)
    (out / "readout_quality.md").write_text(markdown + "\n", encoding="utf-8")
    (out / "readout_quality.json").write_text(json.dumps({"split": args.split, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
