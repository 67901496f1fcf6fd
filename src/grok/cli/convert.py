"""`grok-convert`: external reports (the paper's released JSON, or a CSV) into benchmark references/predictions."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from grok.utils.config import hydra_entry

log = logging.getLogger(__name__)


@hydra_entry("convert")
def main(cfg: DictConfig) -> None:
    """Convert `cfg.input`; write `reference_out` and/or `predictions_out`. Bad input (a ConversionError naming the
    file, record and field) ends the command with one line and exit status 2, before anything is written."""
    from grok.bench.convert import prediction_records, read_external, reference_records, write_jsonl
    from grok.schema.schema import load_schema
    from grok.utils.errors import InputError

    if not cfg.reference_out and not cfg.predictions_out:
        raise InputError("set reference_out=<file.jsonl> and/or predictions_out=<file.jsonl>")
    reports = read_external(cfg.input, cfg.format, load_schema(), dict(cfg.csv_columns))
    references = reference_records(reports, str(cfg.input)) if cfg.reference_out else None
    model = cfg.model or Path(cfg.predictions_out or "").name.removesuffix(".jsonl").removesuffix("_test")
    predictions = prediction_records(reports, model) if cfg.predictions_out else None
    outputs = []
    if references is not None:
        outputs.append(write_jsonl(references, cfg.reference_out))
    if predictions is not None:
        outputs.append(write_jsonl(predictions, cfg.predictions_out))
    for path in outputs:
        print(f"wrote {len(reports)} records to {path}")


if __name__ == "__main__":
    main()
