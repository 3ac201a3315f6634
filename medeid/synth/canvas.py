"""A float RGB canvas in face coordinates, with anti-aliased shapes from signed distances.

Face coordinates: x to the image's right, y down, the face centre at (0, 0) and the image
spanning about [-1, 1] when the pose is neutral. The pose (rotation, scale, shift) is applied
by mapping every pixel back into face coordinates, so every feature, lesion and mask moves with
the face. Shapes are drawn from approximate signed distances (negative inside), which gives
one-pixel anti-aliasing at any resolution without supersampling.
"""

from __future__ import annotations

import numpy as np


class Canvas:
    def __init__(self, size: int, rotation: float = 0.0, scale: float = 1.0,
                 shift: tuple[float, float] = (0.0, 0.0)):
        self.size = size
        centres = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
        iy, ix = np.meshgrid(centres, centres, indexing="ij")
        # Inverse similarity transform: image coordinates -> face coordinates.
        dx, dy = ix - shift[0], iy - shift[1]
        cos, sin = np.cos(-rotation), np.sin(-rotation)
        self.x = ((cos * dx - sin * dy) / scale).astype(np.float32)
        self.y = ((sin * dx + cos * dy) / scale).astype(np.float32)
        self.ix, self.iy = ix, iy  # image coordinates, for effects tied to the camera
        self.pixel = 2.0 / size / scale  # one pixel, in face units
        self.rgb = np.zeros((size, size, 3), dtype=np.float32)
        self.subject: np.ndarray | None = None  # coverage of what is painted after `start_subject`

    def start_subject(self) -> None:
        """From now on, record how much of each pixel the paint covers: the person in front of the scene."""
        self.subject = np.zeros((self.size, self.size), dtype=np.float32)

    def window(self, inside: np.ndarray) -> Canvas:
        """The canvas within the bounding box of `inside` (bool, the canvas's shape), painting through to
        this one: a small feature drawn there costs its box, not the whole image. Everything the caller
        paints on the window must lie inside it (outside, nothing is drawn)."""
        rows, cols = np.flatnonzero(inside.any(axis=1)), np.flatnonzero(inside.any(axis=0))
        box = ((slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)) if rows.size
               else (slice(0, 0), slice(0, 0)))
        view = object.__new__(Canvas)
        view.size, view.pixel = self.size, self.pixel
        view.x, view.y, view.ix, view.iy, view.rgb = (a[box] for a in (self.x, self.y, self.ix, self.iy, self.rgb))
        view.subject = None if self.subject is None else self.subject[box]
        return view

    def coverage(self, signed_distance: np.ndarray, softness: float = 1.0) -> np.ndarray:
        """Fraction of each pixel inside a shape, from its signed distance."""
        return np.clip(0.5 - signed_distance / (self.pixel * softness), 0.0, 1.0)

    def soft(self, signed_distance: np.ndarray, width: float) -> np.ndarray:
        """Like `coverage`, but fading over `width` face units: shadows, blush, swelling."""
        return np.clip(0.5 - signed_distance / max(width, self.pixel), 0.0, 1.0)

    def paint(self, alpha: np.ndarray, color) -> None:
        """Composite `color` (an RGB triple or an HxWx3 field, 0..255) with per-pixel `alpha`."""
        # Only inside the paint's bounding box: most shapes cover a few percent of the canvas, and
        # where alpha is 0 compositing changes nothing (the same pixels, ~2x faster renders).
        rows, cols = np.flatnonzero(alpha.any(axis=1)), np.flatnonzero(alpha.any(axis=0))
        if rows.size == 0:
            return
        box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        alpha = alpha[box]
        color = np.asarray(color, dtype=np.float32)
        if color.ndim == 3:
            color = color[box]
        a, rgb = alpha[..., None], self.rgb[box]
        rgb *= 1.0 - a
        rgb += a * color
        if self.subject is not None:
            subject = self.subject[box]
            subject += alpha * (1.0 - subject)

    def to_uint8(self) -> np.ndarray:
        return np.clip(np.rint(self.rgb), 0, 255).astype(np.uint8)


def ellipse_sd(x, y, cx, cy, a, b, angle: float = 0.0, power: float = 2.0) -> np.ndarray:
    """Approximate signed distance to a rotated super-ellipse with half-axes a, b."""
    u, v = x - cx, y - cy
    if angle:
        cos, sin = np.cos(angle), np.sin(angle)
        u, v = cos * u + sin * v, -sin * u + cos * v
    r = (np.abs(u / a) ** power + np.abs(v / b) ** power) ** (1.0 / power)
    return (r - 1.0) * min(a, b)


def stroke_sd(distance: np.ndarray, half_width) -> np.ndarray:
    """A band of `half_width` around the zero set of `distance`."""
    return np.abs(distance) - half_width


def span_sd(x, x0: float, x1: float) -> np.ndarray:
    """Signed distance to the vertical slab x0 <= x <= x1 (negative inside)."""
    return np.maximum(x0 - x, x - x1)


def rotate(x, y, cx: float, cy: float, angle: float):
    """Coordinates of (x, y) in a frame centred at (cx, cy) and turned by `angle`."""
    u, v = x - cx, y - cy
    cos, sin = np.cos(angle), np.sin(angle)
    return cos * u + sin * v, -sin * u + cos * v


def mix(a, b, t):
    """Linear blend of two colours (or fields); t=0 gives a, t=1 gives b."""
    return np.asarray(a, dtype=np.float32) * (1.0 - t) + np.asarray(b, dtype=np.float32) * t
