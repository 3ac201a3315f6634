"""Who a synthetic patient is: the parameters that stay fixed across all their photos."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

# Anchor colours (RGB); identities interpolate between neighbours and jitter around them.
SKIN_TONES = np.array([[246, 214, 192], [234, 192, 160], [205, 155, 115], [165, 115, 80],
                       [120, 80, 55], [85, 58, 42]], dtype=np.float32)
HAIR_COLOURS = np.array([[25, 20, 20], [60, 40, 28], [100, 68, 42], [165, 120, 70],
                         [215, 185, 120], [140, 60, 30]], dtype=np.float32)
IRIS_COLOURS = np.array([[45, 30, 22], [95, 60, 32], [115, 100, 55], [75, 115, 70],
                         [70, 110, 165], [120, 130, 140]], dtype=np.float32)

SEXES = ("female", "male")


@dataclass(frozen=True)
class Identity:
    """Face geometry and colouring. Lengths are in face units (the image spans about 2)."""

    age: int
    sex: str
    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    iris: tuple[float, float, float]
    lip: tuple[float, float, float]
    face_width: float  # half-width at the cheeks
    face_height: float
    face_power: float  # super-ellipse exponent: 2 is oval, higher is squarer
    jaw_taper: float
    eye_y: float
    eye_spacing: float  # centre of each eye from the midline
    eye_width: float  # half-width of the palpebral fissure
    eye_open: float  # height of the upper lid arc above the eye's centre line
    eye_lower: float  # depth of the lower lid arc
    canthal_tilt: float  # radians; positive lifts the outer corners
    iris_radius: float
    brow_height: float  # above the eye centre
    brow_thickness: float
    brow_arch: float
    brow_slant: float
    socket_depth: float  # periocular shadow strength
    nose_length: float  # y of the nose tip
    nose_width: float
    mouth_y: float
    mouth_width: float
    lip_thickness: float
    hair_volume: float
    hair_length: float  # how far long hair falls past the jaw
    hairline: float  # y of the hairline at the midline
    hair_part: float  # x of the parting
    beard: float  # 0: none
    moles: tuple[tuple[float, float, float], ...]  # (x, y, radius)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Identity":
        d = dict(d)
        for key in ("skin", "hair", "iris", "lip"):
            d[key] = tuple(float(c) for c in d[key])
        d["moles"] = tuple(tuple(float(v) for v in m) for m in d["moles"])
        return cls(**d)


def _palette(rng: np.random.Generator, anchors: np.ndarray, jitter: float) -> tuple[float, float, float]:
    t = rng.uniform(0, len(anchors) - 1)
    i = min(int(t), len(anchors) - 2)
    colour = anchors[i] * (1 - (t - i)) + anchors[i + 1] * (t - i)
    colour = colour + rng.normal(0, jitter, 3)
    return tuple(float(c) for c in np.clip(colour, 0, 255))


def sample_identity(rng: np.random.Generator, age: int, sex: str) -> Identity:
    """A random face for a patient of `age` and `sex`. Sex and age shift the odds mildly."""
    if sex not in SEXES:
        raise ValueError(f"sex must be one of {SEXES}, got {sex!r}")
    male = sex == "male"
    u = rng.uniform
    skin = _palette(rng, SKIN_TONES, 6.0)
    lip_base = np.array(skin) * np.array([0.92, 0.68, 0.68]) + np.array([18, 0, 4]) * (0.6 if male else 1.0)
    iris_radius = float(u(0.042, 0.052))
    n_moles = int(rng.integers(0, 4))
    moles = tuple(
        (float(u(-0.4, 0.4)), float(rng.choice([u(-0.55, -0.3), u(0.05, 0.55)])), float(u(0.010, 0.022)))
        for _ in range(n_moles)
    )
    return Identity(
        age=int(age),
        sex=sex,
        skin=skin,
        hair=_palette(rng, HAIR_COLOURS, 8.0),
        iris=_palette(rng, IRIS_COLOURS, 10.0),
        lip=tuple(float(c) for c in np.clip(lip_base + rng.normal(0, 6, 3), 0, 255)),
        face_width=float(u(0.50, 0.60) + (0.02 if male else 0.0)),
        face_height=float(u(0.66, 0.78)),
        face_power=float(u(2.0, 2.6) + (0.2 if male else 0.0)),
        jaw_taper=float(u(0.15, 0.45) - (0.08 if male else 0.0)),
        eye_y=float(u(-0.14, -0.04)),
        eye_spacing=float(u(0.20, 0.28)),
        eye_width=float(u(0.11, 0.145)),
        eye_open=iris_radius * float(u(0.76, 0.95)),  # the lid normally covers the top of the iris
        eye_lower=float(u(0.026, 0.040)),
        canthal_tilt=float(u(-0.12, 0.16)),
        iris_radius=iris_radius,
        brow_height=float(u(0.10, 0.15)),
        brow_thickness=float(u(0.010, 0.020) + (0.006 if male else 0.0)),
        brow_arch=float(u(0.0, 0.05)),
        brow_slant=float(u(-0.15, 0.15)),
        socket_depth=float(u(0.05, 0.20)),
        nose_length=float(u(0.16, 0.28)),
        nose_width=float(u(0.06, 0.10)),
        mouth_y=float(u(0.38, 0.48)),
        mouth_width=float(u(0.14, 0.22)),
        lip_thickness=float(u(0.018, 0.040) - (0.006 if male else 0.0)),
        hair_volume=float(u(0.04, 0.16)),
        hair_length=float(u(0.0, 0.15) if male else u(0.1, 0.75)),
        hairline=float(u(-0.62, -0.42) + (0.05 * max(0, age - 50) / 30 if male else 0.0)),
        hair_part=float(u(-0.3, 0.3)),
        beard=float(u(0.3, 0.8)) if male and rng.uniform() < 0.3 else 0.0,
        moles=moles,
    )
