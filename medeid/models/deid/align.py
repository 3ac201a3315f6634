"""The face crop MedSem-DeID works on, and the paste back into the photo.

With five landmarks (a detector's eyes, nose and mouth corners) the face is aligned to where the
model's own training crops hold them (its `crop_template`; ArcFace's template for models without one),
at the model's resolution; without them (the synthetic archive's framed faces) it is
the photo's central square. The model's output goes back through the inverse transform under a
mask feathered inwards from the crop's edge, so every pixel outside the face crop is the photo's own,
bit for bit, and the seam inside it is invisible.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from insightface.utils.face_align import arcface_dst
from skimage.transform import SimilarityTransform

from medeid.models.identity import central_square, centred_crop

ARCFACE_SIZE = 112  # the template's frame
PASTE_FEATHER = 0.08  # the paste's edge: blended over this fraction of the crop's side
# The head around a replaced face (hair, ears, outline, neck) is blurred over the crop's square grown
# this many times about its centre, with a blur of this share of the face's side in the photo: the
# crop's square ends near the hairline, and a real head's hair and outline identify (issue 20).
SURROUND_BLUR = 0.12


@dataclass(frozen=True)
class FaceCrop:
    """Where a crop came from: the 2x3 affine map from photo to crop pixels, and the crop's size."""

    matrix: np.ndarray
    size: int


def face_crop(image: np.ndarray, size: int, landmarks: np.ndarray | None = None,
              template: np.ndarray | None = None) -> tuple[np.ndarray, FaceCrop]:
    """The (size, size) face crop of an RGB photo, and how to put it back. With `landmarks`, the face is
    aligned to `template` ((5, 2) fractions of the side: where the model's training crops hold them)
    or, without one, to ArcFace's."""
    if landmarks is None:  # the same crop the recognisers embed
        top, left, side = central_square(*image.shape[:2])
        scale = size / side
        matrix = np.array([[scale, 0, -left * scale], [0, scale, -top * scale]])
        return centred_crop(image, size), FaceCrop(matrix, size)
    landmarks = np.asarray(landmarks, np.float64)
    if landmarks.shape != (5, 2):
        raise ValueError(f"expected 5 (x, y) landmarks, got an array of shape {landmarks.shape}")
    target = arcface_dst / ARCFACE_SIZE if template is None else np.asarray(template, np.float64).reshape(5, 2)
    matrix = SimilarityTransform.from_estimate(landmarks, target * size).params[:2]
    crop = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    return crop, FaceCrop(matrix, size)


def feather_mask(size: int, feather: float = PASTE_FEATHER) -> np.ndarray:
    """1 inside the crop, falling to 0 at its edge over `feather` of its side (float32)."""
    width = max(1, round(feather * size))
    ramp = np.minimum(np.arange(size) + 0.5, size - np.arange(size) - 0.5) / width
    edge = np.clip(ramp, 0, 1)
    return np.outer(edge, edge).astype(np.float32)


def _window(shape: tuple[int, ...], where: FaceCrop) -> tuple[tuple[slice, slice], np.ndarray] | None:
    """The photo's box that the crop lands in (2 px of margin for the interpolation), and the crop ->
    box transform; None when the crop lands outside the photo. Work stays in that box: a 4000 px
    photo costs what its face does."""
    h, w = shape[:2]
    inverse = cv2.invertAffineTransform(where.matrix)
    corners = np.array([[0, 0], [where.size, 0], [0, where.size], [where.size, where.size]], np.float64)
    spots = corners @ inverse[:, :2].T + inverse[:, 2]
    x0, y0 = np.maximum(np.floor(spots.min(axis=0)).astype(int) - 2, 0)
    x1, y1 = np.minimum(np.ceil(spots.max(axis=0)).astype(int) + 2, [w, h])
    if x1 <= x0 or y1 <= y0:
        return None
    inverse[:, 2] -= (x0, y0)
    return (slice(y0, y1), slice(x0, x1)), inverse


def _warp(array: np.ndarray, matrix: np.ndarray, box: tuple[slice, slice]) -> np.ndarray:
    size = (box[1].stop - box[1].start, box[0].stop - box[0].start)
    return cv2.warpAffine(array, matrix, size, flags=cv2.INTER_LINEAR)


def paste_weight(shape: tuple[int, ...], where: FaceCrop, feather: float = PASTE_FEATHER) -> np.ndarray:
    """How much of the crop each photo pixel takes when pasted back, float32 (H, W): 0 outside the face,
    1 where the crop replaces the photo outright."""
    weight = np.zeros(shape[:2], np.float32)
    window = _window(shape, where)
    if window is not None:
        box, matrix = window
        weight[box] = _warp(feather_mask(where.size, feather), matrix, box)
    return weight


def grown(where: FaceCrop, scale: float) -> FaceCrop:
    """The crop's square grown `scale` times about its centre (the same output size)."""
    centre = where.size / 2
    shrink = np.array([[1 / scale, 0, centre * (1 - 1 / scale)], [0, 1 / scale, centre * (1 - 1 / scale)]])
    return FaceCrop(shrink @ np.vstack([where.matrix, [0, 0, 1]]), where.size)


def _surround(where: FaceCrop, scale: float) -> tuple[FaceCrop, float]:
    """The blurred head's square and its feather (as wide in the photo as the face paste's): one
    definition for the blur and for the footprint its seal must cover."""
    return grown(where, scale), PASTE_FEATHER / scale


def surround_weight(shape: tuple[int, ...], where: FaceCrop, scale: float) -> np.ndarray:
    """How much of the blurred head each photo pixel takes (`blur_surround`), float32 (H, W)."""
    return paste_weight(shape, *_surround(where, scale))


def blur_surround(image: np.ndarray, where: FaceCrop, scale: float) -> np.ndarray:
    """`image` with the head around the face crop `where` blurred: the crop's square grown `scale` times,
    feathered at its edge, under a Gaussian blur of `SURROUND_BLUR` of the face's side in the photo.
    Only that square's box is touched (a 4000 px photo costs what its head does)."""
    around, feather = _surround(where, scale)
    window = _window(image.shape, around)
    if window is None:
        return image.copy()
    box, matrix = window
    side = where.size / np.sqrt(abs(np.linalg.det(where.matrix[:, :2])))  # the crop's side in photo pixels
    # The blur reads a margin beyond the box, so the box's edge blurs like its inside.
    margin = int(np.ceil(3 * SURROUND_BLUR * side))
    rows = slice(max(box[0].start - margin, 0), min(box[0].stop + margin, image.shape[0]))
    cols = slice(max(box[1].start - margin, 0), min(box[1].stop + margin, image.shape[1]))
    blurred = cv2.GaussianBlur(image[rows, cols], (0, 0), SURROUND_BLUR * side)
    top, left = box[0].start - rows.start, box[1].start - cols.start
    blurred = blurred[top:top + box[0].stop - box[0].start, left:left + box[1].stop - box[1].start]
    weight = _warp(feather_mask(where.size, feather), matrix, box)
    weight = weight[..., None] if image.ndim == 3 else weight
    out = image.copy()
    out[box] = np.clip(np.rint(image[box] * (1 - weight) + blurred * weight), 0, 255).astype(image.dtype)
    return out


def paste_back(image: np.ndarray, crop: np.ndarray, where: FaceCrop, feather: float = PASTE_FEATHER) -> np.ndarray:
    """`image` with `crop` (the model's output for `where`) put back; untouched outside the face."""
    if crop.shape[:2] != (where.size, where.size):
        raise ValueError(f"the crop is {crop.shape[:2]}, but {where.size} x {where.size} was cut")
    out = image.copy()
    window = _window(image.shape, where)
    if window is None:
        return out
    box, matrix = window
    warped = _warp(crop.astype(np.float32), matrix, box)
    weight = _warp(feather_mask(where.size, feather), matrix, box)
    weight = weight[..., None] if image.ndim == 3 else weight
    blended = np.rint(image[box] * (1 - weight) + warped * weight)
    out[box] = np.where(weight > 0, np.clip(blended, 0, 255), image[box]).astype(image.dtype)
    return out
