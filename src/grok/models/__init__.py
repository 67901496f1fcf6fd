"""Models: image encoders and their checkpoint loaders, the tabular (biomarker) encoder."""
