"""How much more of the ETDRS grid an OCT volume's slices carry than the central B-scan: a frozen-feature probe.

    .venv/bin/grok-synth output_dir=<dir> options.oct_volume.enabled=true options.oct_volume.formats=[tiff]
    .venv/bin/python experiments/align/volume_slices_probe.py --dataset <dir> \
        --encoder artifacts/align/oct_encoder.safetensors [--slices central 7 25 9-15]

Encodes every slice of every eye's volume with the frozen stage-two OCT export (preprocessed from the export's
settings, as stage three does), takes the pooled embedding of the slices `data.oct_slices` would pick (central = the
foveal B-scan, k = k evenly spaced, a-b = the adjacent slices a to b: a control that averages as many slices without
looking further off-axis), concatenates them in slice order, and prints the cross-validated R^2 of a ridge
regression for each ETDRS subfield (5 folds, a subject's two eyes in one fold). No trainable slice aggregator: this
measures what the frozen features of more slices add, the ceiling a linear read-out can reach from them. Writes nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from sklearn.linear_model import RidgeCV
from sklearn.metrics import r2_score
from sklearn.model_selection import GroupKFold, cross_val_predict

from grok.data.io import read_oct_volume, select_slices
from grok.data.table import read_table
from grok.data.transforms import build_transform
from grok.mllm.encoders import build_oct_encoder, transform_settings

SUBFIELDS = tuple(
    f"macula_{name}_um"
    for name in (
        "central",
        "inner_superior",
        "outer_superior",
        "inner_inferior",
        "outer_inferior",
        "inner_nasal",
        "inner_temporal",
        "outer_nasal",
        "outer_temporal",
    )
)


@torch.no_grad()
def slice_embeddings(table: pd.DataFrame, root: Path, encoder, transform) -> np.ndarray:
    """Pooled embeddings [eyes, slices, D] of every slice of each eye's `oct_volume_path` volume."""
    rows = []
    for path in table["oct_volume_path"]:
        stack = read_oct_volume(root / path)
        images = torch.stack([transform(Image.fromarray(scan)) for scan in stack])
        rows.append(encoder.encode(images).pooled.numpy())
    return np.stack(rows)


def subfield_r2(features: np.ndarray, table: pd.DataFrame, folds: int = 5) -> dict[str, float]:
    """Cross-validated ridge R^2 of each subfield from `features` [eyes, F] (eyes missing the value left out)."""
    scores = {}
    for column in SUBFIELDS:
        target = table[column].to_numpy(dtype=float)
        known = ~np.isnan(target)
        ridge = RidgeCV(alphas=np.logspace(-2, 4, 13))
        predicted = cross_val_predict(
            ridge, features[known], target[known], groups=table["subject_id"].to_numpy()[known], cv=GroupKFold(folds)
        )
        scores[column] = r2_score(target[known], predicted)
    return scores


def parse_selection(spec: str) -> object:
    """A `--slices` entry as `select_slices` takes it: 'central', an int k, or 'a-b' as the list [a, ..., b]."""
    if spec == "central":
        return spec
    if "-" in spec:
        first, last = (int(part) for part in spec.split("-"))
        return list(range(first, last + 1))
    return int(spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, required=True, help="a SynthEye folder written with oct_volume")
    parser.add_argument("--encoder", type=Path, required=True, help="stage two's oct_encoder.safetensors")
    parser.add_argument("--slices", nargs="+", default=["central", "7", "25"], help="central, k, or a-b")
    args = parser.parse_args()

    table = read_table(args.dataset / "biomarkers.parquet")
    encoder = build_oct_encoder(str(args.encoder)).eval()
    transform = build_transform(modality="oct", **transform_settings(encoder, "oct"))
    embeddings = slice_embeddings(table, args.dataset, encoder, transform)
    count = embeddings.shape[1]
    print(f"{len(table)} eyes, volumes of {count} slices, {embeddings.shape[2]}-d pooled embeddings per slice")
    names = " | ".join(column.removeprefix("macula_").removesuffix("_um") for column in SUBFIELDS)
    print(f"| slices | {names} |")
    for spec in args.slices:
        chosen = select_slices(count, parse_selection(spec))
        scores = subfield_r2(embeddings[:, chosen].reshape(len(table), -1), table)
        print(f"| {spec} | " + " | ".join(f"{scores[column]:.3f}" for column in SUBFIELDS) + " |", flush=True)


if __name__ == "__main__":
    main()
