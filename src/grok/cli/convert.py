"""`grok-convert`: external reports (the paper's released JSON, or a CSV) into benchmark references/predictions."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from omegaconf import DictConfig

from grok.utils.config import hydra_entry

log = logging.getLogger(__name__)


@hydra_entry("convert")
def main(cfg: DictConfig) -> None:
    """Convert `cfg.input`; write `reference_out` and/or `predictions_out`; exit status 1 on a bad input."""
    from grok.bench.convert import ConversionError, prediction_records, read_external, reference_records, write_jsonl
    from grok.schema.schema import load_schema

    if not cfg.reference_out and not cfg.predictions_out:
        sys.exit("grok-convert: set reference_out=<file.jsonl> and/or predictions_out=<file.jsonl>")
    try:
        reports = read_external(cfg.input, cfg.format, load_schema(), dict(cfg.csv_columns))
        outputs = []
        if cfg.reference_out:
            outputs.append(write_jsonl(reference_records(reports, str(cfg.input)), cfg.reference_out))
        if cfg.predictions_out:
            model = cfg.model or Path(cfg.predictions_out).name.removesuffix(".jsonl").removesuffix("_test")
            outputs.append(write_jsonl(prediction_records(reports, model), cfg.predictions_out))
    except ConversionError as error:
        sys.exit(f"grok-convert: {error}")
    for path in outputs:
        print(f"wrote {len(reports)} records to {path}")


if __name__ == "__main__":
    main()
