"""The eyes, brows and periocular tumour of a synthetic patient photo, where identity and disease overlap.

`eye_frame` puts a condition's geometry on one eye (ptosis lowers the lid, thyroid eye disease lifts it,
strabismus turns the iris); `draw_eye`, `draw_brow` and `draw_tumour` paint on `medeid.synth.render`'s
canvas. `hair_colour` is here because the brows share it with the hair `render` draws.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medeid.synth.canvas import Canvas, ellipse_sd, mix, span_sd, stroke_sd
from medeid.synth.conditions import (
    CONJUNCTIVAL_REDNESS,
    PTOSIS,
    STRABISMUS,
    THYROID_EYE_DISEASE,
    Condition,
)
from medeid.synth.identity import Identity
from medeid.synth.nuisance import Nuisance

SCLERA = (236, 232, 226)
INFLAMED = (214, 84, 80)
LID_MARGIN = (38, 28, 28)
PUPIL = (18, 16, 18)
LESION = (226, 176, 168)
LESION_RIM = (244, 218, 210)
CRUST = (122, 54, 44)
VESSEL = (186, 52, 56)


@dataclass(frozen=True)
class EyeFrame:
    """Where one eye sits and how open it is, with the condition applied."""

    sign: int  # -1 on the image's left (the patient's right)
    cx: float
    cy: float
    open_up: float
    open_down: float
    iris_radius: float
    iris_shift: float  # along the outward axis
    crease: float


def grey(identity: Identity) -> float:
    return float(np.clip((identity.age - 45) / 35, 0.0, 1.0)) * 0.75


def hair_colour(identity: Identity):
    return mix(identity.hair, (205, 205, 200), grey(identity))


def eye_frame(identity: Identity, condition: Condition, nuisance: Nuisance, side: str, shift: float) -> EyeFrame:
    sign = -1 if side == "right" else 1
    open_up = identity.eye_open * nuisance.eye_openness
    open_down = identity.eye_lower
    iris_radius = identity.iris_radius
    iris_shift = sign * nuisance.gaze_x * identity.iris_radius
    crease = 0.022
    if condition.affects(side):
        level = condition.severity
        if condition.disease == PTOSIS:
            open_up *= (0.56, 0.4, 0.25)[level - 1]  # mild still sits below the smallest healthy lid
            crease *= 1.0 + 0.5 * level  # a high, faint crease over a drooping lid
        elif condition.disease == THYROID_EYE_DISEASE:
            open_up = identity.iris_radius * (1.12 + 0.14 * level)  # sclera shows above the iris
            open_down *= 1.0 + 0.22 * level
            iris_radius *= 1.0 + 0.04 * level
        elif condition.disease == STRABISMUS:
            deviation = (0.45, 0.75, 1.05)[level - 1] * identity.iris_radius
            iris_shift += deviation if condition.variant == "exotropia" else -deviation
    return EyeFrame(sign=sign, cx=sign * identity.eye_spacing + shift, cy=identity.eye_y, open_up=open_up,
                     open_down=open_down, iris_radius=iris_radius, iris_shift=iris_shift, crease=crease)


def eye_coords(canvas: Canvas, identity: Identity, eye: EyeFrame):
    """(u, v): u along the eye outwards from its centre, v down, tilted with the canthi."""
    u = eye.sign * (canvas.x - eye.cx)
    v = (canvas.y - eye.cy) + np.tan(identity.canthal_tilt) * u
    return u, v


def eye_window(canvas: Canvas, identity: Identity, eye: EyeFrame) -> Canvas:
    """The part of the canvas `draw_eye` can paint: the socket's shadow is its widest shape (it fades
    out by 1 + 0.03 / its shorter half-axis of its size), the crease and a swollen lid its highest.
    Half as much again, for margin."""
    u, v = eye_coords(canvas, identity, eye)
    width, height = identity.eye_width * 1.45, eye.open_up + eye.open_down + 0.05
    fade = 1.5 * (1 + 0.03 / min(width, height))
    top = max(height * fade + 0.012, eye.open_up + eye.crease + 0.05, eye.open_up + 0.12)
    return canvas.window((np.abs(u) < width * fade + 0.05) & (v > -top) & (v < height * fade))


def draw_eye(canvas: Canvas, identity: Identity, condition: Condition, eye: EyeFrame, side: str) -> None:
    canvas = eye_window(canvas, identity, eye)
    u, v = eye_coords(canvas, identity, eye)
    width = identity.eye_width
    t2 = np.clip((u / width) ** 2, 0, 1)
    upper, lower = -eye.open_up * (1 - t2), eye.open_down * (1 - t2)
    affected = condition.affects(side)
    level = condition.severity if affected else 0

    # Socket shadow, and for active thyroid eye disease a swollen, reddened lid.
    socket = ellipse_sd(u, v, 0.0, -0.012, width * 1.45, eye.open_up + eye.open_down + 0.05)
    canvas.paint(canvas.soft(socket, 0.06) * identity.socket_depth, mix(identity.skin, (60, 30, 30), 0.5))
    if condition.disease == THYROID_EYE_DISEASE and level >= 2:
        swelling = np.minimum(ellipse_sd(u, v, 0.0, -eye.open_up - 0.03, width * 1.1, 0.035),
                              ellipse_sd(u, v, 0.0, eye.open_down + 0.03, width * 1.0, 0.03))
        canvas.paint(canvas.soft(swelling, 0.03) * (0.2 * level), mix(identity.skin, (230, 120, 120), 0.5))
    # Lid crease above the opening.
    crease = np.maximum(stroke_sd(v - (upper - eye.crease), 0.003), np.abs(u) - width * 0.85)
    canvas.paint(canvas.soft(crease, 0.01) * (0.45 if condition.disease != PTOSIS or not affected else 0.2),
                 mix(identity.skin, (0, 0, 0), 0.35))

    # The opening: sclera, iris and pupil, clipped to it.
    opening = np.maximum(np.maximum(upper - v, v - lower), np.abs(u) - width)
    inside = canvas.coverage(opening)
    sclera = np.broadcast_to(np.asarray(SCLERA, np.float32), canvas.rgb.shape).copy()
    sclera *= (1 - 0.22 * t2)[..., None]  # corners in shadow
    if condition.disease == CONJUNCTIVAL_REDNESS and affected:
        sclera = mix(sclera, INFLAMED, (0.2 + 0.16 * level) * (0.6 + 0.4 * t2[..., None]))
    canvas.paint(inside, sclera)
    if condition.disease == CONJUNCTIVAL_REDNESS and affected:
        canvas.paint(inside * vessels(canvas, u, v, width, condition.pattern_seed + eye.sign) * (0.35 + 0.2 * level),
                     VESSEL)
    iris = ellipse_sd(u, v, eye.iris_shift, 0.002, eye.iris_radius, eye.iris_radius)
    r = np.clip(np.hypot(u - eye.iris_shift, v - 0.002) / eye.iris_radius, 0, 1)
    angle = np.arctan2(v, u - eye.iris_shift)
    texture = 1 + 0.1 * np.cos(14 * angle) * r - 0.45 * np.clip(r - 0.78, 0, 1) / 0.22
    canvas.paint(canvas.coverage(iris) * inside, np.asarray(identity.iris, np.float32) * texture[..., None])
    pupil = ellipse_sd(u, v, eye.iris_shift, 0.002, eye.iris_radius * 0.42, eye.iris_radius * 0.42)
    canvas.paint(canvas.coverage(pupil) * inside, PUPIL)
    glint = ellipse_sd(canvas.x, canvas.y, eye.cx + eye.sign * eye.iris_shift - 0.3 * eye.iris_radius,
                       eye.cy - 0.35 * eye.iris_radius, 0.13 * eye.iris_radius, 0.13 * eye.iris_radius)
    canvas.paint(canvas.coverage(glint) * inside * 0.9, (255, 255, 255))
    lash_shadow = np.clip(1 - (v - upper) / (0.5 * eye.open_up + 1e-6), 0, 1)
    canvas.paint(inside * lash_shadow * 0.35, (40, 30, 30))

    # Lid margins: lashes on the upper lid, a faint line below.
    upper_margin = np.maximum(stroke_sd(v - upper, 0.005 + 0.004 * np.clip(u / width, 0, 1)), np.abs(u) - width * 1.05)
    canvas.paint(canvas.coverage(upper_margin), LID_MARGIN)
    lower_margin = np.maximum(stroke_sd(v - lower, 0.0025), np.abs(u) - width)
    canvas.paint(canvas.coverage(lower_margin) * 0.5, mix(identity.skin, (0, 0, 0), 0.35))


def vessels(canvas: Canvas, u, v, width: float, seed: int) -> np.ndarray:
    """Thin wavy vessels running in from the corners of the eye."""
    rng = np.random.default_rng(abs(seed))
    strokes = np.full(u.shape, np.inf, dtype=np.float32)
    for _ in range(6):
        corner = rng.choice([-1.0, 1.0]) * width
        slope, amplitude, frequency = rng.uniform(-0.35, 0.35), rng.uniform(0.002, 0.006), rng.uniform(60, 140)
        wave = v - (slope * (u - corner) + amplitude * np.sin(frequency * u))
        along = span_sd(np.abs(u - corner), 0.0, rng.uniform(0.4, 0.8) * width)
        strokes = np.minimum(strokes, np.maximum(stroke_sd(wave, 0.0025), along))
    return canvas.coverage(strokes, softness=1.5)


def draw_brow(canvas: Canvas, identity: Identity, eye: EyeFrame) -> None:
    u, v = eye_coords(canvas, identity, eye)
    width = identity.eye_width
    s = (u + width * 1.1) / (width * 2.5)  # 0 at the inner end, 1 at the tail
    centre = -identity.brow_height - identity.brow_arch * (1 - (2 * s - 1.2) ** 2) + identity.brow_slant * (u - 0.0) * 0.3
    half = identity.brow_thickness * (1 - 0.55 * np.clip(s, 0, 1))
    brow = np.maximum(stroke_sd(v - centre, half), span_sd(s, 0.0, 1.0) * width * 2.5)
    canvas.paint(canvas.coverage(brow) * 0.85, mix(hair_colour(identity), identity.skin, 0.15))


def draw_tumour(canvas: Canvas, identity: Identity, condition: Condition, eye: EyeFrame) -> np.ndarray:
    """A BCC-like nodule: pearly, with a rolled border, vessels and, when advanced, an ulcer."""
    rng = np.random.default_rng(condition.pattern_seed)
    radius = (0.04, 0.055, 0.072)[condition.severity - 1]
    width, a = identity.eye_width, condition.tumour_angle
    offsets = {  # (outward, down) from the eye's centre
        "lower_lid": (a * width * 0.8, eye.open_down + 0.018 + radius),
        "upper_lid": (a * width * 0.6, -eye.open_up - 0.03 - radius),
        "medial_canthus": (-width - 0.012 - radius * 0.7, a * 0.04),
        "lateral_canthus": (width + 0.012 + radius * 0.7, a * 0.04),
    }
    du, dv = offsets[condition.tumour_site]
    lx, ly = eye.cx + eye.sign * du, eye.cy + dv
    dx, dy = canvas.x - lx, canvas.y - ly
    theta = np.arctan2(dy, dx)
    phases = rng.uniform(0, 2 * np.pi, 2)
    edge = radius * (1 + 0.12 * np.sin(2 * theta + phases[0]) + 0.08 * np.sin(3 * theta + phases[1]))
    dist = np.hypot(dx, dy)
    alpha = canvas.coverage(dist - edge)
    t = np.clip(dist / edge, 0, 1)[..., None]
    colour = mix(identity.skin, LESION, 0.75) * (1 + 0.12 * np.clip(-(dx + dy) / radius, -1, 1))[..., None]
    colour = mix(colour, LESION_RIM, 0.6 * np.clip((t - 0.68) / 0.22, 0, 1))  # rolled, pearly border
    strokes = np.full(dist.shape, np.inf, dtype=np.float32)
    for _ in range(3):
        slope, offset, wave = rng.uniform(-1.5, 1.5), rng.uniform(-0.5, 0.5) * radius, rng.uniform(0.1, 0.3) * radius
        strokes = np.minimum(strokes, stroke_sd(dy - slope * dx - offset - wave * np.sin(dx / radius * 6), 0.0025))
    colour = mix(colour, VESSEL, (canvas.coverage(strokes, 1.5) * 0.7 * (t[..., 0] < 0.85))[..., None])
    if condition.severity >= 2:
        ulcer = dist - edge * (0.22 + 0.1 * (condition.severity - 2))
        colour = mix(colour, CRUST, canvas.coverage(ulcer, 1.5)[..., None])
    canvas.paint(alpha, colour)
    return alpha
