"""Shared plumbing: config discovery, Hydra entry points, instantiation helpers, the training runner."""
