"""The de-identification baselines MedSem-DeID is compared with (DESIGN §3): blur, pixelate, black
box, and a black box that keeps the eye region (the same diagnostic region MeMa's inpainting keeps).

Each maps face crops, uint8 (N, R, R, 3), to de-identified crops of the same shape; the lesion
masks (N, R, R) bool, where given, widen the eye-kept box's kept region to the lesion.
"""

from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

from medeid.mema.generation import keep_region

BLUR_SIGMA = 1 / 16  # of the crop's side: a 64-px face blurred at sigma 4 px
PIXELS = 8  # pixelate to 8 x 8 blocks across the face


def blur(crops: np.ndarray, masks: np.ndarray | None = None) -> np.ndarray:
    sigma = BLUR_SIGMA * crops.shape[1]
    return np.stack([cv2.GaussianBlur(c, (0, 0), sigma) for c in crops])


def pixelate(crops: np.ndarray, masks: np.ndarray | None = None) -> np.ndarray:
    size = crops.shape[1]
    return np.stack([cv2.resize(cv2.resize(c, (PIXELS, PIXELS), interpolation=cv2.INTER_AREA), (size, size),
                                interpolation=cv2.INTER_NEAREST) for c in crops])


def black_box(crops: np.ndarray, masks: np.ndarray | None = None) -> np.ndarray:
    return np.zeros_like(crops)


def eyes_kept_box(crops: np.ndarray, masks: np.ndarray | None = None) -> np.ndarray:
    size = crops.shape[1]
    kept = np.stack([keep_region(size, None if masks is None else masks[i]) for i in range(len(crops))])[..., None]
    return np.rint(crops * kept).astype(np.uint8)


BASELINES: dict[str, Callable[[np.ndarray, np.ndarray | None], np.ndarray]] = {
    "blur": blur, "pixelate": pixelate, "black box": black_box, "eyes-kept box": eyes_kept_box}
