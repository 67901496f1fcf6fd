"""Alignment metrics: cross-modal retrieval recall@k, pair cosine, linear probes on frozen embeddings, and plots."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.metrics import r2_score, roc_auc_score
from sklearn.preprocessing import StandardScaler
from torch import Tensor


def similarity_matrix(image_embeddings: Tensor, table_embeddings: Tensor) -> Tensor:
    """Cosine similarities [N_image, N_table] of L2-normalised embeddings (row i's true pair is column i)."""
    return F.normalize(image_embeddings.float(), dim=-1) @ F.normalize(table_embeddings.float(), dim=-1).T


def recall_at_k(similarity: Tensor, ks: Sequence[int] = (1, 5, 10)) -> dict[int, float]:
    """Fraction of rows whose true pair (the diagonal) is among the k most similar columns."""
    true_scores = similarity.diagonal().unsqueeze(1)
    rank = (similarity > true_scores).sum(dim=1)  # 0 = ranked first (ties count in the row's favour)
    return {k: (rank < k).float().mean().item() for k in ks}


def retrieval_metrics(image_embeddings: Tensor, table_embeddings: Tensor, ks: Sequence[int] = (1, 5, 10)) -> dict:
    """Recall@k in both directions, their means, the mean cosine of true pairs, and chance recall@1."""
    similarity = similarity_matrix(image_embeddings, table_embeddings)
    image_to_table, table_to_image = recall_at_k(similarity, ks), recall_at_k(similarity.T, ks)
    metrics: dict[str, float] = {}
    for k in ks:
        metrics[f"image_to_table_recall@{k}"] = image_to_table[k]
        metrics[f"table_to_image_recall@{k}"] = table_to_image[k]
        metrics[f"recall@{k}"] = (image_to_table[k] + table_to_image[k]) / 2
    metrics["recall_mean"] = float(np.mean([metrics[f"recall@{k}"] for k in ks]))
    metrics["pair_cosine"] = similarity.diagonal().mean().item()
    metrics["chance_recall@1"] = 1.0 / similarity.shape[0]
    return metrics


def linear_probe(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    train_targets: np.ndarray,
    eval_features: np.ndarray,
    eval_labels: np.ndarray,
    eval_targets: np.ndarray,
    target_names: Sequence[str] = (),
    inverse_regularisation: float = 1.0,
    ridge_alphas: Sequence[float] = (0.1, 1.0, 10.0, 100.0),
) -> dict[str, float]:
    """Frozen embeddings -> each diagnosis label (logistic regression, macro AUROC over labels present in both
    splits) and -> each target biomarker (ridge, R^2 on rows where it is measured). Features standardised on train."""
    scaler = StandardScaler().fit(train_features)
    train_x, eval_x = scaler.transform(train_features), scaler.transform(eval_features)
    results: dict[str, float] = {}
    aurocs = []
    for column in range(train_labels.shape[1]):
        y_train, y_eval = train_labels[:, column], eval_labels[:, column]
        if len(np.unique(y_train)) < 2 or len(np.unique(y_eval)) < 2:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            classifier = LogisticRegression(C=inverse_regularisation, max_iter=2000).fit(train_x, y_train)
        aurocs.append(roc_auc_score(y_eval, classifier.predict_proba(eval_x)[:, 1]))
    results["probe_dx_auroc"] = float(np.mean(aurocs)) if aurocs else float("nan")
    r2s = []
    for column, name in enumerate(target_names):
        train_rows, eval_rows = np.isfinite(train_targets[:, column]), np.isfinite(eval_targets[:, column])
        if train_rows.sum() < 3 or eval_rows.sum() < 3:
            continue
        regressor = RidgeCV(alphas=list(ridge_alphas)).fit(train_x[train_rows], train_targets[train_rows, column])
        score = r2_score(eval_targets[eval_rows, column], regressor.predict(eval_x[eval_rows]))
        results[f"probe_r2/{name}"] = float(score)
        r2s.append(score)
    results["probe_r2"] = float(np.mean(r2s)) if r2s else float("nan")
    return results


def plot_retrieval_curve(similarity: Tensor, path: Path, max_k: int | None = None) -> Figure:
    """Recall@k against k for both directions, with chance, saved as PNG at `path`."""
    n = similarity.shape[0]
    ks = list(range(1, (max_k or n) + 1))
    figure = Figure(figsize=(5, 4))
    axis = figure.subplots()
    for matrix, label in ((similarity, "image → table"), (similarity.T, "table → image")):
        recalls = recall_at_k(matrix, ks)
        axis.plot(ks, [recalls[k] for k in ks], label=label)
    axis.plot(ks, [k / n for k in ks], "--", color="grey", label="chance")
    axis.set(xlabel="k", ylabel="recall@k", title=f"Retrieval on {n} validation pairs", ylim=(0, 1.02))
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return figure


def plot_similarity(similarity: Tensor, path: Path, max_items: int = 64) -> Figure:
    """Heat map of image/table cosine similarities of the first `max_items` pairs, saved as PNG at `path`."""
    block = similarity[:max_items, :max_items].cpu().numpy()
    figure = Figure(figsize=(5, 4.4))
    axis = figure.subplots()
    image = axis.imshow(block, cmap="viridis", vmin=-1, vmax=1)
    axis.set(xlabel="biomarker row", ylabel="OCT image", title="Cosine similarity (pairs on the diagonal)")
    figure.colorbar(image, ax=axis, fraction=0.046)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return figure


def log_figures(loggers: Sequence[Any], figures: Mapping[str, tuple[Figure, Path]], step: int) -> None:
    """Send saved figures to each logger that takes images (W&B, TensorBoard); CSV keeps the PNG files only."""
    for logger in loggers:
        experiment = getattr(logger, "experiment", None)
        if hasattr(logger, "log_image"):  # WandbLogger
            for key, (_, path) in figures.items():
                logger.log_image(key=key, images=[str(path)], step=step)
        elif experiment is not None and hasattr(experiment, "add_figure"):  # TensorBoardLogger
            for key, (figure, _) in figures.items():
                experiment.add_figure(key, figure, global_step=step)


def as_numpy(tensor: Tensor) -> np.ndarray:
    """float64 numpy copy of a tensor (any device, any float dtype)."""
    return tensor.detach().to(torch.float64).cpu().numpy()
