"""How fast does an MLLM configuration learn to read its inputs, and does it generalise? The `diagnosis` task alone.

    .venv/bin/python experiments/mllm/learn_reliance.py --steps 600 [hydra overrides of conf/mllm.yaml ...]
    .venv/bin/python experiments/mllm/learn_reliance.py --steps 600 fusion.input_norm=null \
        llm.config.initializer_range=0.02 adaptation=lora adaptation.dropout=0.05  # the first CPU default
    .venv/bin/python experiments/mllm/learn_reliance.py --steps 3000 --every 500 --blank-images   # prompt only

Trains the model of `conf/mllm.yaml` (plus overrides) on `--train` diagnosis conversations of the train split with
random batches, and every `--every` steps scores `--held` other eyes twice: with their own images and with the
images rolled by one within each batch. The gap (rolled minus own, loss per supervised token) is the image reliance
the model has learned on eyes it never saw; it stays at ~0 when the answers come from the training prior alone.
It also prints the diagnosis accuracy on the held-out eyes and on as many training eyes (greedy answers of
`--answer-tokens` tokens, which open with the diagnosis, read by the benchmark's parser and compared with the eye's
labels): a wide gap is memorisation. The first line gives what the prompt's numbers alone allow: a logistic
regression and gradient boosting on the six values the prompt states (age, sex, systolic and diastolic blood
pressure, HbA1c, BMI), fitted on the same training eyes and scored on the same held-out ones.
`--blank-images` zeroes every image, so the model sees the prompt only. The conversations are in the file's order
(both eyes of a subject are neighbours), so the split between training and held-out eyes keeps subjects apart when
`--train` is even. Uses `paths.root_dir` data (run `make data` and `make train-align` first). One CPU thread by
default, so two configurations can run side by side on two cores.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from grok.bench.diagnosis import parse_diagnosis
from grok.bench.text import AnalysedText, Vocabulary
from grok.bench.vocabulary import build_vocabulary
from grok.knowledge.parser import load_knowledge_base
from grok.mllm.collator import InstructCollator
from grok.mllm.generate import generate_batch
from grok.mllm.module import InstructModule
from grok.schema.schema import load_schema
from grok.utils.config import config_dir


def compose_mllm(overrides: list[str], run_dir: Path):
    """`conf/mllm.yaml` composed as Hydra would, with this run's output folder."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("mllm", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    return cfg


PROMPT_VALUES = ("age_years", "sbp_mmhg", "dbp_mmhg", "hba1c_mmol_mol", "bmi_kg_m2")


def prompt_value_baselines(train: list[dict], held: list[dict]) -> dict[str, float]:
    """Held-out accuracy of classifiers on the prompt's systemic values (the first label of each eye)."""

    def table(records: list[dict]) -> tuple[np.ndarray, list[str]]:
        rows = [
            [float(r["facts"]["systemic"].get(key) or 0.0) for key in PROMPT_VALUES]
            + [float(r["facts"]["systemic"].get("sex") == "F")]
            for r in records
        ]
        return np.array(rows), [r["labels"][0] for r in records]

    (x_train, y_train), (x_held, y_held) = table(train), table(held)
    classifiers = {
        "logistic regression": make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
        "gradient boosting": GradientBoostingClassifier(random_state=0),
    }
    return {
        name: float(np.mean(model.fit(x_train, y_train).predict(x_held) == np.array(y_held)))
        for name, model in classifiers.items()
    }


def diagnosis_accuracy(
    module: InstructModule,
    prompts: list[dict],
    truths: list[list[str]],
    collate: Callable[..., dict],
    vocabulary: Vocabulary,
    tokens: int,
) -> float:
    """Share of prompts whose greedy answer names the eye's labels, read by the benchmark's parser
    (`parse_diagnosis`) from the first `tokens` generated tokens (the answer opens with the diagnosis)."""
    module.model.eval()
    correct = 0
    for start in range(0, len(prompts), 16):
        batch = collate(prompts[start : start + 16], "left")
        texts = generate_batch(module.model, module.tokenizer, batch, max_new_tokens=tokens)
        for text, truth in zip(texts, truths[start : start + 16], strict=True):
            correct += set(parse_diagnosis(AnalysedText(text, vocabulary)).labels) == set(truth)
    module.model.train()
    return correct / len(prompts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--every", type=int, default=150)
    parser.add_argument("--train", type=int, default=384, help="train conversations sampled from")
    parser.add_argument("--held", type=int, default=64, help="held-out conversations scored")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run-dir", default="logs/learn_reliance")
    parser.add_argument("--blank-images", action="store_true", help="zero every image: the prompt alone")
    parser.add_argument("--answer-tokens", type=int, default=16, help="tokens generated to read the diagnosis from")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run_dir = Path(args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = compose_mllm(["data.tasks=[diagnosis]", "logger=none", *args.overrides], run_dir)
    torch.manual_seed(args.seed)
    module = hydra.utils.instantiate(cfg.model)
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.setup("fit")
    dataset = datamodule.datasets["train"]
    if len(dataset) < args.train + args.held:
        raise SystemExit(f"{len(dataset)} diagnosis conversations; need --train + --held = {args.train + args.held}")
    train_index = list(range(args.train))
    held_index = list(range(args.train, args.train + args.held))
    records = dataset.records
    baselines = prompt_value_baselines([records[i] for i in train_index], [records[i] for i in held_index])
    print("held-out diagnosis accuracy from the prompt's values alone:", baselines)
    generation = datamodule.build_dataset("train", generation=True)  # the same conversations, prompts only
    schema = load_schema()
    vocabulary = build_vocabulary(schema, load_knowledge_base(schema=schema))

    collators = {side: InstructCollator(module.tokenizer.pad_token_id, side) for side in ("right", "left")}

    def collate(items: list[dict], padding_side: str = "right") -> dict:
        batch = collators[padding_side](items)
        if args.blank_images:
            for modality in ("oct", "cfp"):
                if batch.get(f"{modality}_pixels") is not None:
                    batch[f"{modality}_pixels"] = torch.zeros_like(batch[f"{modality}_pixels"])
        return batch

    def accuracy(indices: list[int]) -> float:
        prompts, truths = [generation[i] for i in indices], [records[i]["labels"] for i in indices]
        return diagnosis_accuracy(module, prompts, truths, collate, vocabulary, args.answer_tokens)

    optimizer = module.optimizer_factory(params=module.parameter_groups())
    rng = random.Random(args.seed)

    def reliance() -> tuple[float, float]:
        module.model.eval()
        own = rolled = 0.0
        with torch.no_grad():
            for start in range(0, len(held_index), 16):
                batch = collate([dataset[i] for i in held_index[start : start + 16]])
                swapped = dict(batch)
                for modality in ("oct", "cfp"):
                    if batch.get(f"{modality}_pixels") is not None:
                        swapped[f"{modality}_pixels"] = batch[f"{modality}_pixels"].roll(1, 0)
                own += module.model(batch)["loss"].item()
                rolled += module.model(swapped)["loss"].item()
        module.model.train()
        batches = -(-len(held_index) // 16)
        return own / batches, (rolled - own) / batches

    module.model.train()
    started = time.perf_counter()
    print("step  train loss  held-out loss  image-reliance gap  diagnosis acc. held-out / training eyes  seconds")
    for step in range(args.steps + 1):
        batch = collate([dataset[i] for i in rng.sample(train_index, cfg.data.batch_size)])
        optimizer.zero_grad()
        loss = module.model(batch)["loss"]
        loss.backward()
        optimizer.step()
        if step % args.every == 0:
            held, gap = reliance()
            held_accuracy, train_accuracy = accuracy(held_index), accuracy(train_index[: len(held_index)])
            print(
                f"{step:4d}  {loss.item():10.3f}  {held:13.4f}  {gap:+18.4f}"
                f"  {held_accuracy:23.3f} / {train_accuracy:.3f}  {time.perf_counter() - started:7.0f}"
            )


if __name__ == "__main__":
    main()
