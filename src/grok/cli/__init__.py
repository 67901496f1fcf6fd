"""Console entry points (each a Hydra app on one top-level config in conf/)."""
