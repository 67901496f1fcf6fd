"""The Grounded Ophthalmic Understanding (GOU) benchmark: diagnosis, report quality and grounded clinical quality."""

from grok.bench.predictions import Prediction, PredictionIssue, PredictionSet, PredictionsFileError, load_predictions
from grok.bench.references import Reference, load_references

__all__ = [
    "Prediction",
    "PredictionIssue",
    "PredictionSet",
    "PredictionsFileError",
    "Reference",
    "load_predictions",
    "load_references",
]
