"""Stage two: CLIP-style alignment of an OCT encoder with the biomarker table (datamodule, losses, module, export)."""
