"""grok-validate: check a biomarker table against the schema and print every problem (file, row, column, value).

Exit status: 0 when the table is valid; 1 when it has problems (the report on stdout lists them, and stderr has one
line with the first); 2 when the table cannot be read at all or a config value is wrong (one line on stderr,
`grok.utils.errors`). With `check_images=true` (the default) every image the table names is decoded, not only looked
for: a truncated, empty or non-image file, or a decompression bomb, is a problem of its row.
"""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig

from grok.data.table import validate_table
from grok.schema.validate import TableValidationError
from grok.utils.config import hydra_entry, program_name

EXIT_PROBLEMS = 1  # the table was read and has problems (the report lists them)


@hydra_entry("validate")
def main(cfg: DictConfig) -> None:
    """Validate `cfg.table`, print the problems and optionally write them all to `cfg.report_file`."""
    report = validate_table(cfg.table, check_images=cfg.check_images)
    print(report.summary(limit=cfg.max_listed))
    if cfg.report_file:
        Path(cfg.report_file).write_text("\n".join(map(str, report.problems)) + "\n", encoding="utf-8")
    if not report.ok:
        print(f"{program_name()}: error: {TableValidationError(report).headline}", file=sys.stderr, flush=True)
        sys.exit(EXIT_PROBLEMS)
