"""`grok-eval`: the GOU benchmark on one or more predictions files (conf/eval.yaml)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from grok.utils.config import hydra_entry


@hydra_entry("eval")
def main(cfg: DictConfig) -> float | None:
    """Score the predictions and baselines; print the Markdown table; return the first model's clinical score."""
    from grok.bench.evaluate import run_evaluation

    summary = run_evaluation(cfg)
    print((Path(cfg.output_dir) / "results.md").read_text(encoding="utf-8"))
    first = next(iter(summary.values()), None)
    return None if first is None else first["clinical_score"]


if __name__ == "__main__":
    main()
