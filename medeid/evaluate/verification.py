"""Face verification figures: true accept rate at a false accept rate, and its threshold."""

from __future__ import annotations

import numpy as np


def verification_rates(embeddings: np.ndarray, labels: np.ndarray, far: float = 1e-3) -> dict:
    """TAR at `far` over all pairs of `embeddings` (L2-normalised rows) with identity `labels`.

    The threshold is the smallest cosine similarity that at most `far` of impostor pairs exceed;
    faces scoring above it are taken as the same person.
    """
    labels = np.asarray(labels)
    similarity = embeddings @ embeddings.T
    upper = np.triu_indices(len(labels), 1)
    scores, same = similarity[upper], (labels[:, None] == labels[None, :])[upper]
    genuine, impostor = scores[same], np.sort(scores[~same])
    if not len(genuine) or len(impostor) < 1 / far:
        raise ValueError(f"too few pairs to measure TAR at FAR {far}: {len(genuine)} genuine, "
                         f"{len(impostor)} impostor (need >= {int(1 / far)})")
    threshold = float(impostor[int(np.ceil(len(impostor) * (1 - far))) - 1])
    return {
        "tar": float((genuine > threshold).mean()),
        "far": float((impostor > threshold).mean()),
        "threshold": threshold,
        "genuine_pairs": int(len(genuine)),
        "impostor_pairs": int(len(impostor)),
    }
