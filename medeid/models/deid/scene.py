"""The new face in the photo's own scene: no square shows where the crop goes back.

The network draws the donor as the donor was photographed: their head on their own wall. Pasted
back, the crop's square would show wherever the donor's wall meets the photo's (a frame, however
feathered the paste). So the scene around the new head is shifted to the photo's: the colour
difference between the photo and the network's output along the crop's border is spread over the
crop as a harmonic (smoothest) field and added where the donor's head is not (`subject`, from the
renderer). At the border the scene is the photo's, so the feathered paste blends like with like;
the head keeps its own colours, so the findings' colours (redness, a lesion) are untouched.
"""

from __future__ import annotations

import functools

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import torch
import torch.nn.functional as F

GRID = 32  # the field is smooth: solved on this grid, then upsampled


@functools.cache
def _laplacian(m: int) -> scipy.sparse.linalg.SuperLU:
    """LU of the 5-point Laplacian on an m x m grid's interior (Dirichlet border), factorised once."""
    n = m - 2
    line = scipy.sparse.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(n, n))
    eye = scipy.sparse.identity(n)
    return scipy.sparse.linalg.splu((scipy.sparse.kron(eye, line) + scipy.sparse.kron(line, eye)).tocsc())


def harmonic_fill(border: torch.Tensor) -> torch.Tensor:
    """(N, C, m, m) whose outermost ring holds boundary values -> the same with the interior filled by
    the harmonic function that takes them (Laplace's equation, the smoothest fill)."""
    n, c, m, _ = border.shape
    values = border.detach().cpu().double().numpy().reshape(n * c, m, m)
    rhs = np.zeros((n * c, m - 2, m - 2))
    rhs[:, 0] += values[:, 0, 1:-1]
    rhs[:, -1] += values[:, -1, 1:-1]
    rhs[:, :, 0] += values[:, 1:-1, 0]
    rhs[:, :, -1] += values[:, 1:-1, -1]
    inside = _laplacian(m).solve(rhs.reshape(n * c, -1).T).T.reshape(n * c, m - 2, m - 2)
    filled = values.copy()
    filled[:, 1:-1, 1:-1] = inside
    return torch.from_numpy(filled.reshape(n, c, m, m)).to(border)


def match_scene(y: torch.Tensor, x: torch.Tensor, subject: torch.Tensor) -> torch.Tensor:
    """`y` (N, 3, R, R) with the scene around the new head moved to `x`'s colours at the crop's border.

    `subject`: (N, 1, R, R) in [0, 1], where `y` shows the new head (the donor's, in the photo's pose).
    The border difference is read over the outer `R / GRID` pixels of each side."""
    size = y.shape[-1]
    difference = F.interpolate(x - y, size=(GRID, GRID), mode="area")
    field = F.interpolate(harmonic_fill(difference), size=(size, size), mode="bilinear", align_corners=True)
    return (y + (1 - subject) * field).clamp(-1, 1)
