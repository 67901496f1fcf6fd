"""Image encoders (RetinaViT) and one loader per checkpoint format."""

from grok.models.encoders.build import build_encoder
from grok.models.encoders.checkpoints import (
    CheckpointMismatchError,
    LoadReport,
    PickledCheckpointError,
    load_checkpoint,
    read_state_file,
)
from grok.models.encoders.exported import export_encoder, load_exported_encoder, read_export_config
from grok.models.encoders.vit import EncoderOutput, RetinaViT

__all__ = [
    "CheckpointMismatchError",
    "EncoderOutput",
    "LoadReport",
    "PickledCheckpointError",
    "RetinaViT",
    "build_encoder",
    "export_encoder",
    "load_checkpoint",
    "load_exported_encoder",
    "read_export_config",
    "read_state_file",
]
