"""What changes between two photos of the same patient: pose, light, expression, scene, camera."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

WALLS = np.array([[214, 218, 222], [196, 210, 214], [222, 214, 196], [180, 190, 205],
                  [205, 220, 200], [235, 235, 232]], dtype=np.float32)


@dataclass(frozen=True)
class Nuisance:
    rotation: float = 0.0  # radians, in-plane
    scale: float = 1.0
    shift_x: float = 0.0
    shift_y: float = 0.0
    yaw: float = 0.0  # turns inner features sideways, -1..1
    gaze_x: float = 0.0  # both eyes together, in iris radii
    gaze_y: float = 0.0
    eye_openness: float = 1.0
    smile: float = 0.0
    light_angle: float = 0.0
    light_strength: float = 0.0
    brightness: float = 1.0
    warmth: float = 0.0  # colour temperature, -1..1
    background_top: tuple[float, float, float] = (220.0, 222.0, 225.0)
    background_bottom: tuple[float, float, float] = (200.0, 204.0, 210.0)
    clothing: tuple[float, float, float] = (70.0, 90.0, 120.0)
    blur: float = 0.0  # Gaussian radius in pixels at 128 px
    noise: float = 0.0  # Gaussian sigma in grey levels
    noise_seed: int = 0
    jpeg_quality: int = 95

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Nuisance":
        d = dict(d)
        for key in ("background_top", "background_bottom", "clothing"):
            d[key] = tuple(float(c) for c in d[key])
        return cls(**d)


def sample_nuisance(rng: np.random.Generator) -> Nuisance:
    """Photo-to-photo variation of a clinic camera: moderate, as in a frontal clinical photo."""
    u = rng.uniform
    wall = WALLS[rng.integers(len(WALLS))] + rng.normal(0, 8, 3)
    return Nuisance(
        rotation=float(rng.normal(0, 0.05)),
        scale=float(u(0.93, 1.07)),
        shift_x=float(rng.normal(0, 0.03)),
        shift_y=float(rng.normal(0, 0.03)),
        yaw=float(rng.normal(0, 0.25)),
        gaze_x=float(rng.normal(0, 0.12)),
        gaze_y=float(rng.normal(0, 0.08)),
        eye_openness=float(u(0.9, 1.06)),
        smile=float(u(-0.2, 0.6)),
        light_angle=float(u(0, 2 * np.pi)),
        light_strength=float(u(0.0, 0.25)),
        brightness=float(u(0.88, 1.1)),
        warmth=float(u(-1, 1)),
        background_top=tuple(float(c) for c in np.clip(wall + 10, 0, 255)),
        background_bottom=tuple(float(c) for c in np.clip(wall - 15, 0, 255)),
        clothing=tuple(float(c) for c in rng.uniform(30, 200, 3)),
        blur=float(u(0.0, 0.6)),
        noise=float(u(0.0, 4.0)),
        noise_seed=int(rng.integers(0, 2**31 - 1)),
        jpeg_quality=int(rng.integers(75, 96)),
    )
