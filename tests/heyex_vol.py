"""Heidelberg `.vol` files for tests, written in eyepy's own HSF-OCT layout (eyepy ships no sample volume; it
downloads them).

eyepy 0.21's `HeVolWriter` cannot build a file (its date adapters encode a float into the 64-bit exam time and expect
a string where the writer passes a date), so this writes the same layout through eyepy's `vol_format` with the exam
time as its raw integer; reading goes through `eyepy.import_heyex_vol` unchanged.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

LAYERS = 17  # the HSF-OCT B-scan header holds 17 layer boundaries per A-scan
DATE = "2020-01-01T00:00:00"


def write_heyex_vol(path: Path, scans: np.ndarray, cube_mm: float = 6.0) -> Path:
    """Write `scans` ([n, h, w] uint8 B-scans, superior to inferior) as a `.vol` volume scan spanning `cube_mm`."""
    import construct as cs
    from eyepy.core.utils import to_vol_intensity
    from eyepy.io.he.vol_reader import vol_format

    layout = cs.Struct(*[("exam_time" / cs.Int64ul) if c.name == "exam_time" else c for c in vol_format.subcons])
    count, height, width = scans.shape
    step = cube_mm / max(count - 1, 1)
    bscans = [
        {
            "bscan_hdr_size": 256 + LAYERS * 4 * width,
            "start_x": 0.0,
            "start_y": step * i,
            "end_x": cube_mm,
            "end_y": step * i,
            "num_seg": LAYERS,
            "quality": 30.0,
            "shift": 0,
            "iv_transformation": [0.0] * 6,
            "layer_segmentations": np.zeros((LAYERS, width), np.float32),
            "data": to_vol_intensity(scan),
        }
        for i, scan in enumerate(scans)
    ]
    header = {
        "size_x": width,
        "n_bscans": count,
        "size_y": height,
        "scale_x": cube_mm / width,
        "distance": step,
        "scale_y": 0.0039,
        "size_x_slo": 16,
        "size_y_slo": 16,
        "scale_x_slo": cube_mm / 16,
        "scale_y_slo": cube_mm / 16,
        "scan_position": "OD",
        "exam_time": 0,
        "id": "grok-test",
        "reference_id": "grok-test",
        "patient_id": "grok-test",
        "dob": DATE,
        "visit_id": "grok-test",
        "visit_date": DATE,
        "grid_type": 0,
        "grid_offset": 0,
        "grid_type1": 0,
        "grid_offset1": 0,
        "prog_id": "grok tests",
        "localizer": np.zeros((16, 16), np.uint8),
        "bscans": bscans,
    }
    path.write_bytes(layout.build(header))
    return path
