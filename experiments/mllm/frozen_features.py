"""What the MLLM's frozen image features carry, without the language model: a linear probe and a variance split.

    .venv/bin/python experiments/mllm/frozen_features.py [--images 128] [hydra overrides of conf/mllm.yaml ...]

Builds the encoders of `conf/mllm.yaml` (plus overrides) as `grok-train-mllm` does (the stage-two OCT export, the
CFP encoder of `encoder@cfp_encoder`) and encodes every train and val eye of stage one's instructions (one `report`
record per eye, preprocessing without augmentation). Prints:

- a logistic regression on each image's token mean and standard deviation (OCT and CFP), fitted on the train eyes,
  scored on the val eyes: macro-F1 and accuracy of the eye's first label; then the same with the prompt's systolic
  and diastolic blood pressure and HbA1c added (the systemic values the prompt states);
- for `--images` train images per modality, the share of the tokens' variance that differs between images at a fixed
  token position (the rest is the same for every image: position embeddings, norm biases).

Uses `paths.root_dir` data (run `make data` and `make train-align` first); writes nothing.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import hydra
import numpy as np
import torch
from learn_reliance import compose_mllm  # this folder is on sys.path when the script runs
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

MODALITIES = ("oct", "cfp")
PROMPT_VALUES = ("sbp_mmhg", "dbp_mmhg", "hba1c_mmol_mol")


@torch.no_grad()
def eye_tokens(model, dataset, modality: str, batch_size: int = 32) -> torch.Tensor:
    """Frozen patch tokens [eyes, N, D] of each record's first image of `modality`."""
    paths = [record["images"][modality] for record in dataset.records]
    chunks = []
    for start in range(0, len(paths), batch_size):
        pixels = torch.stack([dataset.load_image(modality, p) for p in paths[start : start + batch_size]])
        chunks.append(model.encode_images(modality, pixels))
    return torch.cat(chunks)


def summary_features(tokens: dict[str, torch.Tensor]) -> np.ndarray:
    """Per eye: mean and standard deviation over tokens of every feature, OCT then CFP."""
    return torch.cat([torch.cat([t.mean(dim=1), t.std(dim=1)], dim=1) for t in tokens.values()], dim=1).numpy()


def between_image_share(tokens: torch.Tensor) -> float:
    """Share of the tokens' total variance that differs between images at a fixed token position."""
    flat = tokens.reshape(-1, tokens.shape[-1])
    total = flat.var(dim=0, unbiased=False).sum()
    between = tokens.var(dim=0, unbiased=False).mean(dim=0).sum()
    return float(between / total)


def probe(x_train: np.ndarray, y_train: list[str], x_val: np.ndarray, y_val: list[str]) -> tuple[float, float]:
    """Val macro-F1 and accuracy of a standardised logistic regression."""
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(x_train, y_train)
    predicted = model.predict(x_val)
    return float(f1_score(y_val, predicted, average="macro")), float(np.mean(predicted == np.array(y_val)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=128, help="train images per modality for the variance split")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = compose_mllm(["logger=none", "data.tasks=[report]", *args.overrides], Path(tempfile.mkdtemp()))
    module = hydra.utils.instantiate(cfg.model)
    module.model.eval()
    datamodule = hydra.utils.instantiate(cfg.data)
    splits = {}
    for split in ("train", "val"):
        dataset = datamodule.build_dataset(split, generation=True)
        dataset.records = [r for r in dataset.records if r["id"] == r["eye_id"]]  # one report record per eye
        tokens = {m: eye_tokens(module.model, dataset, m) for m in MODALITIES}
        splits[split] = (dataset.records, tokens)
    (train_records, train_tokens), (val_records, val_tokens) = splits["train"], splits["val"]
    y_train = [r["labels"][0] for r in train_records]
    y_val = [r["labels"][0] for r in val_records]
    x_train, x_val = summary_features(train_tokens), summary_features(val_tokens)

    def systemic(records: list[dict]) -> np.ndarray:
        return np.array([[float(r["facts"]["systemic"].get(k) or 0.0) for k in PROMPT_VALUES] for r in records])

    print(f"eyes: {len(train_records)} train, {len(val_records)} val; first labels, {len(set(y_train))} classes")
    f1, accuracy = probe(x_train, y_train, x_val, y_val)
    print(f"image features only:                 val macro-F1 {f1:.3f}, accuracy {accuracy:.3f}")
    with_prompt = np.hstack([x_train, systemic(train_records)]), np.hstack([x_val, systemic(val_records)])
    f1, accuracy = probe(with_prompt[0], y_train, with_prompt[1], y_val)
    print(f"image features + prompt BP and HbA1c: val macro-F1 {f1:.3f}, accuracy {accuracy:.3f}")
    for modality in MODALITIES:
        share = between_image_share(train_tokens[modality][: args.images])
        print(f"{modality} tokens: {share:.0%} of the variance differs between images at a fixed token position")


if __name__ == "__main__":
    main()
