"""Does the language model read the values? Teacher-forced accuracy on the judgement tokens of test reports.

    .venv/bin/python experiments/mllm/judgement_probe.py <export dir> [split]

The judgement tokens are the 4 answer tokens after each value token ("within normal limits", "under the lower
limit of"). Their accuracy is measured with the eye's own values, with another eye's values (the text stays: a
model that reads the values loses accuracy), with another eye's images, and with every value missing.
"""

from __future__ import annotations

import argparse
import copy
from typing import Any

import hydra
import torch

from grok.mllm.chat import IGNORE_INDEX
from grok.mllm.collator import InstructCollator
from grok.mllm.export import load_exported_mllm


def judgement_accuracy(module: Any, items: list[dict[str, Any]], batch_size: int = 8) -> tuple[float, int]:
    """Share of judgement tokens predicted right (greedy, teacher-forced), and their count."""
    model, grounding = module.model.eval(), module.model.grounding
    hits = total = 0
    for start in range(0, len(items), batch_size):
        batch = InstructCollator(module.tokenizer.pad_token_id)(items[start : start + batch_size])
        with torch.no_grad():
            spliced = model.prepare_inputs(batch, padding_side="right").spliced
            logits = model.causal_lm(
                inputs_embeds=spliced.inputs_embeds,
                attention_mask=spliced.attention_mask,
                position_ids=spliced.position_ids,
            ).logits
        targets = spliced.labels[:, 1:]
        rows = model._compact(targets.clamp(min=0))
        mask = (grounding.judgement_weights(rows) > 1) & (targets != IGNORE_INDEX)
        hits += int((logits[:, :-1].argmax(-1)[mask] == rows[mask]).sum())
        total += int(mask.sum())
    return hits / max(total, 1), total


def _with(items: list[dict[str, Any]], donor_of, fields) -> list[dict[str, Any]]:
    out = []
    for index, item in enumerate(items):
        item = copy.deepcopy(item)
        donor = donor_of(index)
        for field in fields(item):
            item[field] = donor[field] if donor is not None else torch.full((len(item[field]),), float("nan"))
        out.append(item)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("export")
    parser.add_argument("split", nargs="?", default="test")
    parser.add_argument("--records", type=int, default=24)
    args = parser.parse_args()
    module, cfg = load_exported_mllm(args.export)
    grounding = module.model.grounding
    if grounding is None:
        raise SystemExit(f"{args.export} is not a grounded export")
    grounding.judgement_weight, grounding.judgement_window = 2.0, 4  # marks the judgement tokens
    grounding.judged_row.zero_()
    cfg.data.counterfactual = {"probability": 0.0}
    datamodule = hydra.utils.instantiate(cfg.data, tokenizer=module.tokenizer)
    dataset = datamodule.build_dataset(args.split, tasks=["report"])
    items = [dataset[i] for i in range(min(len(dataset), args.records))]
    n = len(items)
    values = ("quantity_values", "quantity_low", "quantity_high")
    variants = {
        "own values and images": items,
        "another eye's values": _with(items, lambda i: items[(i + 7) % n], lambda _: values),
        "another eye's images": _with(
            items, lambda i: items[(i + 7) % n], lambda item: [f for f in item if f.startswith(("oct_", "cfp_"))]
        ),
        "every value missing": _with(items, lambda i: None, lambda _: ["quantity_values"]),
    }
    for name, variant in variants.items():
        accuracy, count = judgement_accuracy(module, variant)
        print(f"{name:<24} judgement-token accuracy {accuracy:.3f} ({count} tokens, {n} reports)")


if __name__ == "__main__":
    main()
