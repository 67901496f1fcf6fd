"""Export of stage two: the aligned OCT encoder (safetensors + JSON) and a metrics JSON beside it."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from grok.align.finetune import merged_encoder
from grok.align.module import AlignModule, probe_gain
from grok.models.encoders import export_encoder


def _finite(metrics: Mapping[str, Any]) -> dict[str, float | None]:
    return {
        key: (None if not math.isfinite(float(value)) else float(value))
        for key, value in sorted(metrics.items())
        if isinstance(value, (int, float))
    }


def export_aligned_encoder(
    module: AlignModule,
    directory: str | Path,
    name: str = "oct_encoder",
    metrics: Mapping[str, Mapping[str, Any]] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write `<directory>/<name>.safetensors` + `.json` (LoRA merged) and `metrics.json`; return the weights path.

    `metrics` maps a split name (val, test) to its logged metrics; probe gains over the un-aligned encoder are added.
    """
    directory = Path(directory)
    encoder = merged_encoder(module.image_encoder)
    path = export_encoder(encoder, directory / f"{name}.safetensors", metadata={"stage": "align", **(metadata or {})})
    report: dict[str, Any] = {"encoder": str(path)}
    for split, values in (metrics or {}).items():
        prefix = f"{split}/"
        stripped = {key.removeprefix(prefix): value for key, value in values.items() if key.startswith(prefix)}
        report[split] = _finite({**stripped, **probe_gain(stripped)})
    (directory / "metrics.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return path
