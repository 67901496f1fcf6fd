"""Collect a grok-train-align multirun into experiments/align/: metrics.json, comparison.md and figures.

    .venv/bin/python experiments/align/summarise_sweep.py logs/align/multiruns/<time> [...] [--out experiments/align]

Each job must have exported with `export.dir='${paths.output_dir}/export'` (so jobs do not overwrite each other).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
import yaml
from matplotlib.figure import Figure

KEYS = [
    "recall@1",
    "recall@5",
    "recall@10",
    "chance_recall@1",
    "pair_cosine",
    "probe_dx_auroc",
    "probe_dx_auroc_unaligned",
    "probe_r2",
    "probe_r2_unaligned",
]


def _job(directory: Path) -> dict:
    overrides = yaml.safe_load((directory / ".hydra" / "overrides.yaml").read_text())
    choice = dict(
        item.split("=", 1) for item in overrides if "=" in item and not item.startswith(("paths.", "export."))
    )
    choice = {"loss": "clip", "tabular": "ours", **choice}
    extra = {k: v for k, v in choice.items() if k not in ("loss", "tabular")}
    encoder = yaml.safe_load((directory / ".hydra" / "config.yaml").read_text())["tabular"]["encoder"]
    if "dropout" in encoder:  # ours: record the knobs the comparison varied
        extra = {"dropout": encoder["dropout"], "norm": encoder.get("norm", "layer")}
    choice["variant"] = ", ".join(f"{k}={v}" for k, v in extra.items()) or "-"
    metrics_file = directory / "export" / "metrics.json"
    metrics = json.loads(metrics_file.read_text())
    started = (directory / ".hydra" / "config.yaml").stat().st_mtime
    curve = pd.read_csv(next(directory.glob("csv/version_*/metrics.csv")))
    curve = curve.dropna(subset=["val/recall@1"])[["epoch", "val/recall@1", "val/recall_mean", "val/pair_cosine"]]
    return {
        "job": directory.name,
        **choice,
        "wall_s": round(metrics_file.stat().st_mtime - started, 1),
        "val": {k: metrics["val"].get(k) for k in KEYS},
        "test": {k: metrics["test"].get(k) for k in KEYS},
        "curve": curve.drop_duplicates("epoch").to_dict("list"),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("multiruns", type=Path, nargs="+")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    args = parser.parse_args()
    jobs = [
        _job(d)
        for multirun in args.multiruns
        for d in sorted(multirun.iterdir(), key=lambda p: p.name)
        if (d / "export").is_dir()
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "metrics.json").write_text(json.dumps(jobs, indent=2) + "\n")

    rows = [
        "| loss | tabular | variant | split | recall@1 (chance) | recall@5 | recall@10 | pair cos "
        "| probe dx AUROC (un-aligned) | probe R² (un-aligned) | wall s |",
        "|" + "---|" * 11,
    ]
    for job in jobs:
        for split in ("val", "test"):
            m = job[split]
            rows.append(
                f"| {job['loss']} | {job['tabular']} | {job['variant']} | {split} | {m['recall@1']:.3f} "
                f"({m['chance_recall@1']:.3f}) | {m['recall@5']:.3f} | {m['recall@10']:.3f} | {m['pair_cosine']:.3f} "
                f"| {m['probe_dx_auroc']:.3f} ({m['probe_dx_auroc_unaligned']:.3f}) | {m['probe_r2']:.3f} "
                f"({m['probe_r2_unaligned']:.3f}) | {job['wall_s']:.0f} |"
            )
    (args.out / "comparison.md").write_text("\n".join(rows) + "\n")

    figure = Figure(figsize=(10, 4))
    left, right = figure.subplots(1, 2)
    for job in jobs:
        label = f"{job['loss']} + {job['tabular']}" + ("" if job["variant"] == "-" else f" ({job['variant']})")
        left.plot(job["curve"]["epoch"], job["curve"]["val/recall@1"], label=label)
        right.plot(job["curve"]["epoch"], job["curve"]["val/recall_mean"], label=label)
    chance = jobs[0]["val"]["chance_recall@1"]
    left.axhline(chance, ls="--", color="grey", label="chance")
    left.set(xlabel="epoch", ylabel="val recall@1 (mean of both directions)")
    right.set(xlabel="epoch", ylabel="val mean recall@{1,5,10}")
    left.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(args.out / "val_recall_curves.png", dpi=120)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
