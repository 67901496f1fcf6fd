"""How fast does the tiny language model learn to copy a value from the prompt across a long stretch of text?

    .venv/bin/python experiments/mllm/prompt_copy.py --steps 1200 --distance 200
    .venv/bin/python experiments/mllm/prompt_copy.py --steps 1200 --distance 50      # a shorter stretch
    .venv/bin/python experiments/mllm/prompt_copy.py --steps 1200 \
        '+llm.config.rope_parameters={rope_type:default,rope_theta:1000000.0}'           # Qwen2-7B's RoPE base
    .venv/bin/python experiments/mllm/prompt_copy.py --steps 1200 --distance 50 adaptation=lora   # peft LoRA instead

A SynthEye report restates the prompt's blood pressure and HbA1c in its systemic lines, several hundred tokens after
the prompt; the tiny default rarely learns to (its reports quote the training mean). This harness isolates that skill:
the `llm` config of `conf/mllm.yaml` (plus overrides), built by the same `build_language_model` over the real Qwen2
tokenizer with a compact vocabulary and adapted as the `adaptation/` group says (`full` for the tiny base: every
weight trains; `adaptation=lora` for a peft adapter with trained embeddings/head), is trained (no images) on synthetic
conversations
"<128 blank visual positions> BP s/d mmHg, HbA1c h mmol/mol. -> <`--distance` filler words>. SBP s mmHg, DBP d mmHg,
HbA1c h mmol/mol." and every `--every` steps reports the greedy accuracy of the copied digits on 64 held-out prompts
(about 0.4 from the digits' marginal alone, 1.0 when every value is copied). One CPU thread by default; runs of
different `--seed` differ by up to ~0.15 at 1,200 steps, so compare settings over several seeds.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import torch
from learn_reliance import compose_mllm  # this folder is on sys.path when the script runs
from omegaconf import OmegaConf

from grok.mllm.adaptation import adapt_language_model
from grok.mllm.chat import IGNORE_INDEX
from grok.mllm.language_model import build_language_model
from grok.mllm.tokenizer import build_tokenizer
from grok.mllm.vocab_trim import build_vocabulary_map

FILLER_TEXT = (
    "the retinal nerve fibre layer thickness is measured across the macula and the optic disc with normal ranges"
)
FILLER_WORDS = FILLER_TEXT.split()


def conversation(rng: random.Random, distance: int) -> tuple[str, str]:
    """One synthetic prompt and answer: the answer restates the prompt's three values after `distance` words."""
    sbp, dbp, hba1c = rng.randint(95, 190), rng.randint(55, 110), rng.randint(28, 95)
    prompt = f"Patient: {rng.randint(40, 80)}-year-old woman, right eye. BP {sbp}/{dbp} mmHg, HbA1c {hba1c} mmol/mol."
    filler = " ".join(rng.choice(FILLER_WORDS) for _ in range(distance))
    return prompt, f"{filler}. SBP {sbp} mmHg, DBP {dbp} mmHg, HbA1c {hba1c} mmol/mol."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--every", type=int, default=400)
    parser.add_argument("--distance", type=int, default=200, help="filler words between the prompt and the copy")
    parser.add_argument("--visual", type=int, default=128, help="blank positions standing in for visual tokens")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("overrides", nargs="*", help="overrides of conf/mllm.yaml, e.g. llm.config.num_hidden_layers=4")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)

    cfg = compose_mllm(["logger=none", *args.overrides], Path("logs/prompt_copy"))
    tokenizer = build_tokenizer(cfg.llm.tokenizer_path)
    examples = []
    for _ in range(4096):
        prompt, answer = conversation(rng, args.distance)
        prompt_ids, answer_ids = tokenizer(prompt)["input_ids"], tokenizer(answer)["input_ids"]
        blank = [tokenizer.pad_token_id] * args.visual
        examples.append((blank + prompt_ids + answer_ids, len(blank) + len(prompt_ids)))
    vocabulary = build_vocabulary_map(tokenizer, [tokenizer.decode(ids) for ids, _ in examples])
    llm = OmegaConf.to_container(cfg.llm, resolve=True)
    options = {key: llm[key] for key in ("config", "dtype", "attn_implementation")}
    model = build_language_model(tokenizer_size=len(tokenizer), vocabulary=vocabulary, **options)
    adaptation = OmegaConf.to_container(cfg.adaptation, resolve=True)
    if adaptation["mode"] not in ("full", "lora"):
        raise SystemExit("prompt_copy.py trains the language model: use adaptation=full (the default) or =lora")
    model = adapt_language_model(model, **adaptation)  # full fine-tuning for the tiny base, or adaptation=lora
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=args.lr, weight_decay=0.0)
    digits = {i for i in vocabulary.compact_to_real.tolist() if tokenizer.decode([i]).strip().isdigit()}

    def collate(items: list[tuple[list[int], int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        length = max(len(ids) for ids, _ in items)
        ids = torch.full((len(items), length), tokenizer.pad_token_id)
        labels = torch.full((len(items), length), IGNORE_INDEX)
        mask = torch.zeros((len(items), length), dtype=torch.long)
        copied = torch.zeros((len(items), length), dtype=torch.bool)
        for row, (tokens, answer_start) in enumerate(items):
            ids[row, : len(tokens)] = torch.tensor(tokens)
            labels[row, answer_start : len(tokens)] = torch.tensor(tokens[answer_start:])
            mask[row, : len(tokens)] = 1
            # the filler has no digits: every digit of the answer is a copied one
            copied[row, answer_start : len(tokens)] = torch.tensor([t in digits for t in tokens[answer_start:]])
        return vocabulary.to_compact(ids), torch.where(labels >= 0, vocabulary.to_compact(labels), labels), mask, copied

    train, held = examples[:-64], examples[-64:]

    def copy_accuracy() -> float:
        model.eval()
        ids, _, mask, copied = collate(held)
        with torch.no_grad():
            predicted = model(input_ids=ids, attention_mask=mask).logits[:, :-1].argmax(-1)
        model.train()
        target, where = ids[:, 1:], copied[:, 1:]
        return float((predicted[where] == target[where]).float().mean())

    started = time.perf_counter()
    print("step  train loss  copied-digit accuracy  seconds")
    for step in range(args.steps + 1):
        ids, labels, mask, _ = collate([train[rng.randrange(len(train))] for _ in range(args.batch_size)])
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % args.every == 0:
            print(f"{step:4d}  {loss.item():10.3f}  {copy_accuracy():21.3f}  {time.perf_counter() - started:7.0f}")


if __name__ == "__main__":
    main()
