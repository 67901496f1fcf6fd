"""grok-validate: check a biomarker table against the schema; exit status 1 when it has problems."""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig

from grok.data.table import validate_table
from grok.utils.config import hydra_entry


@hydra_entry("validate")
def main(cfg: DictConfig) -> None:
    """Validate `cfg.table`, print the problems and optionally write them all to `cfg.report_file`."""
    report = validate_table(cfg.table, check_images=cfg.check_images)
    print(report.summary(limit=cfg.max_listed))
    if cfg.report_file:
        Path(cfg.report_file).write_text("\n".join(map(str, report.problems)) + "\n", encoding="utf-8")
    if not report.ok:
        sys.exit(1)
