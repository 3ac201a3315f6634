"""Image bytes in and out: the formats medeid reads and writes, one place for their options."""

from __future__ import annotations

import hashlib
import io

import numpy as np
from PIL import Image

EXTENSIONS = {"jpeg": "jpg", "png": "png"}


def encode(image: np.ndarray, fmt: str, jpeg_quality: int = 92) -> bytes:
    """Encode an (H, W, 3) uint8 RGB array, or an (H, W) bool/uint8 mask, as JPEG or PNG."""
    if fmt not in EXTENSIONS:
        raise ValueError(f"unsupported image format {fmt!r}; expected one of {sorted(EXTENSIONS)}")
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    buffer = io.BytesIO()
    if fmt == "jpeg":
        Image.fromarray(image).save(buffer, format="JPEG", quality=int(jpeg_quality))
    else:
        # Level 6 balances size and speed; PNG is lossless at every level.
        Image.fromarray(image).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def decode(data: bytes, mode: str = "RGB") -> np.ndarray:
    """Decode image bytes to a uint8 array in `mode` ('RGB' or 'L')."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert(mode))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
