"""Read an offline W&B run (`run-<id>.wandb`): its id, name, group and config, as the run wrote them.

The file is W&B's transaction log: a 7-byte header (":W&B", magic 0xBEE1, version 0), then protobuf `Record`s in
LevelDB-log framing (32 KiB blocks; each chunk has a 7-byte header: crc32, length, type FULL/FIRST/MIDDLE/LAST).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK = 32768
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


@dataclass
class OfflineRun:
    """What an offline run recorded about itself."""

    run_id: str = ""
    name: str = ""
    group: str = ""
    config: dict = field(default_factory=dict)


def _payloads(data: bytes) -> list[bytes]:
    ident, magic, version = struct.unpack("<4sHB", data[:HEADER])
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0), f"not a W&B transaction log: {data[:HEADER]!r}"
    payloads, pending, offset = [], b"", HEADER
    while offset + HEADER <= len(data):
        if BLOCK - offset % BLOCK < HEADER:  # the rest of a block too short for a header is padding
            offset += BLOCK - offset % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[offset : offset + HEADER])
        chunk = data[offset + HEADER : offset + HEADER + length]
        offset += HEADER + length
        if kind == FULL:
            payloads.append(chunk)
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            payloads.append(pending + chunk)
        else:
            break  # zero padding at the end of the file
    return payloads


def read_offline_run(path: Path) -> OfflineRun:
    """The run record and every config update of one `run-<id>.wandb` file."""
    run = OfflineRun()
    for payload in _payloads(Path(path).read_bytes()):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.run_id, run.name, run.group = record.run.run_id, record.run.display_name, record.run.run_group
            updates = record.run.config.update
        elif kind == "config":
            updates = record.config.update
        else:
            continue
        run.config.update({item.key: json.loads(item.value_json) for item in updates})
    return run
