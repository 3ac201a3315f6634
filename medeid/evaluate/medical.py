"""Medical utility figures: classification accuracy per class and lesion Dice."""

from __future__ import annotations

import numpy as np


def classification_report(truth: np.ndarray, predicted: np.ndarray, names: tuple[str, ...]) -> dict:
    """Overall accuracy, accuracy (recall) per class, and the confusion matrix (rows: truth)."""
    truth, predicted = np.asarray(truth), np.asarray(predicted)
    confusion = np.zeros((len(names), len(names)), dtype=int)
    np.add.at(confusion, (truth, predicted), 1)
    per_class = {name: float(confusion[i, i] / confusion[i].sum()) for i, name in enumerate(names)
                 if confusion[i].sum()}
    return {"accuracy": float((truth == predicted).mean()), "per_class": per_class, "confusion": confusion.tolist()}


def dice(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two boolean masks; two empty masks agree perfectly."""
    predicted, truth = np.asarray(predicted, bool), np.asarray(truth, bool)
    total = predicted.sum() + truth.sum()
    return 1.0 if total == 0 else float(2 * (predicted & truth).sum() / total)
