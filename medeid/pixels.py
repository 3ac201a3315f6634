"""Pixels between their stored form and the networks' input.

Photos travel as uint8 RGB, (N, H, W, 3); every network here reads float (N, 3, H, W) in [-1, 1]
(diffusers' VAE range). One pair of conversions, so no two modules round a level differently.
"""

from __future__ import annotations

import numpy as np
import torch


def to_signed(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (or 0-255 float) (N, H, W, 3) -> float (N, 3, H, W) in [-1, 1], on the input's device."""
    pixels = torch.from_numpy(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
    return pixels.permute(0, 3, 1, 2).float() / 127.5 - 1.0


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """float (N, 3, H, W) in [-1, 1] (clipped) -> uint8 (N, H, W, 3) on the CPU."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
