"""Draw a patient photo from identity, condition and nuisance: same inputs, same pixels.

The drawing is layered back to front (scene, hair, face, features, eyes, lesion), then the
camera acts (light, blur, noise). The lesion is the last layer drawn, so its pixel mask is exactly
where it covers the face. The five landmarks (eyes, nose tip, mouth corners) come from the same
geometry the features are drawn from, so they are exact: what a face detector learns to find.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageFilter

from medeid.synth.canvas import Canvas, ellipse_sd, mix, span_sd, stroke_sd
from medeid.synth.conditions import PERIOCULAR_TUMOUR, Condition
from medeid.synth.eyes import draw_brow, draw_eye, draw_tumour, eye_frame, hair_colour
from medeid.synth.identity import SEXES, Identity, sample_identity
from medeid.synth.nuisance import Nuisance

MIN_SIZE, MAX_SIZE = 64, 256
FRAMING = 1.25  # a clinical close-up: the face fills the frame, crown and chin at the edges
SIDES = ("right", "left")  # the patient's sides; their right eye is on the image's left

@dataclass(frozen=True)
class Rendered:
    image: np.ndarray  # (H, W, 3) uint8 RGB
    lesion_mask: np.ndarray  # (H, W) bool, True on the tumour
    # (5, 2) float32 pixel (x, y), pixel centres at integers (as OpenCV and insightface place them), in
    # ArcFace's order: eye centres (image left, then right), nose tip, mouth corners (image left, right).
    landmarks: np.ndarray = field(default_factory=lambda: np.full((5, 2), np.nan, np.float32))
    # (H, W) float32 in [0, 1]: how much of each pixel is the person (hair, head, face), not the scene
    # (wall and clothing) behind. Before the camera's blur.
    subject: np.ndarray | None = None


def render(identity: Identity, condition: Condition, nuisance: Nuisance, size: int = 128) -> Rendered:
    """Render one photo at `size` x `size` pixels (64 to 256)."""
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"size must be between {MIN_SIZE} and {MAX_SIZE} px, got {size}")
    canvas = Canvas(size, nuisance.rotation, FRAMING * nuisance.scale, (nuisance.shift_x, nuisance.shift_y))
    # Turning the head slides the inner features sideways against the face outline.
    shift = 0.07 * nuisance.yaw
    eyes = {side: eye_frame(identity, condition, nuisance, side, shift) for side in SIDES}

    # 1. Scene and head, back to front.
    _draw_scene(canvas, nuisance)
    canvas.start_subject()
    _draw_hair_back(canvas, identity)
    face_sd = _draw_face(canvas, identity)
    # 2. Lower face and skin marks.
    _draw_beard(canvas, identity, face_sd, shift)
    _draw_moles(canvas, identity, face_sd)
    _draw_nose(canvas, identity, shift)
    _draw_mouth(canvas, identity, nuisance, shift)
    _draw_wrinkles(canvas, identity, eyes, shift)
    # 3. Eyes and brows, where identity and disease overlap.
    for side in SIDES:
        draw_eye(canvas, identity, condition, eyes[side], side)
        draw_brow(canvas, identity, eyes[side])
    _draw_hair_front(canvas, identity, face_sd)
    # 4. The lesion last, so its coverage is its mask.
    lesion = np.zeros((size, size), dtype=np.float32)
    if condition.disease == PERIOCULAR_TUMOUR:
        side = "right" if condition.affects("right") else "left"
        lesion = draw_tumour(canvas, identity, condition, eyes[side])
    # 5. The camera.
    image = _photograph(canvas, nuisance)
    return Rendered(image=image, lesion_mask=lesion >= 0.5,
                    landmarks=_landmarks(identity, nuisance, eyes, shift, size), subject=canvas.subject)


def crop_template(count: int = 64, seed: int = 0) -> np.ndarray:
    """(5, 2) float64: where the five landmarks sit in this world's photos, as fractions of the side,
    averaged over `count` people facing the camera. A model that learnt on these photos crops a face
    found in any other photo so that its landmarks land here (`medeid.models.deid.align.face_crop`):
    ArcFace's tighter template zooms in ~1.1x on the average face and leaves more of the head's
    outline, hair and jaw outside the crop."""
    rng, side = np.random.default_rng(seed), 1000
    marks = []
    for i in range(count):
        person = sample_identity(rng, int(rng.integers(20, 80)), SEXES[i % len(SEXES)])
        eyes = {eye: eye_frame(person, Condition(), Nuisance(), eye, 0.0) for eye in SIDES}
        marks.append((_landmarks(person, Nuisance(), eyes, 0.0, side) + 0.5) / side)
    return np.mean(np.asarray(marks, np.float64), axis=0)


def _landmarks(identity: Identity, nuisance: Nuisance, eyes: dict, shift: float, size: int) -> np.ndarray:
    """The five ArcFace landmarks in image pixels: the features' face coordinates through the camera.

    Eyes: the centre of each opening (not the iris, which gaze and strabismus move). Nose: the tip's
    highlight. Mouth: where the lip line ends, raised by a smile as `_draw_mouth` draws it.
    """
    corner_y = identity.mouth_y - 0.025 * nuisance.smile  # the lip line at t = +-1
    face = np.array([
        [eyes["right"].cx, eyes["right"].cy],  # the patient's right eye, on the image's left
        [eyes["left"].cx, eyes["left"].cy],
        [shift * 1.4, identity.nose_length - 0.03],
        [shift - identity.mouth_width, corner_y],
        [shift + identity.mouth_width, corner_y],
    ], dtype=np.float64)
    # The inverse of `Canvas`'s pixel -> face map: scale, rotate, shift, then to pixel indices.
    scale, cos, sin = FRAMING * nuisance.scale, np.cos(nuisance.rotation), np.sin(nuisance.rotation)
    ix = scale * (cos * face[:, 0] - sin * face[:, 1]) + nuisance.shift_x
    iy = scale * (sin * face[:, 0] + cos * face[:, 1]) + nuisance.shift_y
    return np.stack([(ix + 1) * size / 2 - 0.5, (iy + 1) * size / 2 - 0.5], axis=1).astype(np.float32)


def _draw_scene(canvas: Canvas, nuisance: Nuisance) -> None:
    t = np.clip((canvas.iy + 1) / 2, 0, 1)[..., None]
    canvas.rgb[:] = mix(nuisance.background_top, nuisance.background_bottom, t)
    shoulders = ellipse_sd(canvas.x, canvas.y, 0.0, 1.45, 1.05, 0.62)
    canvas.paint(canvas.coverage(shoulders), nuisance.clothing)


def _draw_hair_back(canvas: Canvas, identity: Identity) -> None:
    x, y = canvas.x, canvas.y
    width = identity.face_width + identity.hair_volume
    crown = ellipse_sd(x, y, 0.0, -0.14, width, identity.face_height * 0.92 + identity.hair_volume)
    # Long hair falls behind the face and onto the shoulders.
    bottom = identity.face_height * 0.5 + identity.hair_length
    fall = np.maximum(np.abs(x) - width * 0.96, np.maximum(-0.1 - y, y - bottom))
    hair = np.minimum(crown, fall)
    canvas.paint(canvas.coverage(hair), hair_colour(identity))
    ears = [ellipse_sd(x, y, s * identity.face_width * 0.97, identity.eye_y + 0.1, 0.06, 0.11) for s in (-1, 1)]
    canvas.paint(canvas.coverage(np.minimum(*ears)), mix(identity.skin, (0, 0, 0), 0.1))


def _face_sd(canvas: Canvas, identity: Identity) -> np.ndarray:
    x, y = canvas.x, canvas.y
    # The jaw narrows below the cheeks.
    half_width = identity.face_width * (1 - identity.jaw_taper * np.clip(y / identity.face_height, 0, 1) ** 2)
    r = (np.abs(x / half_width) ** identity.face_power + np.abs(y / identity.face_height) ** 2) ** (1 / 2)
    return (r - 1) * identity.face_width


def _draw_face(canvas: Canvas, identity: Identity) -> np.ndarray:
    x, y = canvas.x, canvas.y
    sd = _face_sd(canvas, identity)
    depth = np.clip(1 + sd / identity.face_width, 0, 1)  # 0 at the centre, 1 at the rim
    skin = np.asarray(identity.skin, np.float32) * (1 - 0.2 * depth[..., None] ** 3)
    canvas.paint(canvas.coverage(sd), skin)
    blush = np.minimum(*[ellipse_sd(x, y, s * 0.28, 0.16, 0.11, 0.07) for s in (-1, 1)])
    canvas.paint(canvas.soft(blush, 0.08) * 0.12, (222, 120, 118))
    return sd


def _draw_beard(canvas: Canvas, identity: Identity, face_sd, shift: float) -> None:
    if identity.beard <= 0:
        return
    # Where a beard grows: the moustache and chin, and a strip along the jaw. Not the cheeks: a flat tint
    # over the whole lower face read as a band across the face (light hair on dark skin most of all).
    x, y = canvas.x, canvas.y
    beside_mouth = np.clip((np.abs(x - shift) - 0.6 * identity.mouth_width) / 0.12, 0, 1)
    chin = np.maximum(face_sd, identity.nose_length + 0.03 + 0.1 * beside_mouth - y)
    jaw = np.maximum(np.maximum(face_sd, -face_sd - 0.06), identity.mouth_y - 0.08 - y)
    lips = ellipse_sd(x, y, shift, identity.mouth_y, identity.mouth_width * 1.05, identity.lip_thickness * 1.6)
    region = np.maximum(np.minimum(chin, jaw), -lips)
    # Stubble darkens the skin whatever the hair's colour.
    colour = np.minimum(mix(hair_colour(identity), (0, 0, 0), 0.15), np.asarray(identity.skin, np.float32) * 0.8)
    canvas.paint(canvas.soft(region, 0.03) * identity.beard * 0.55, colour)


def _draw_moles(canvas: Canvas, identity: Identity, face_sd) -> None:
    inside = canvas.coverage(face_sd)
    for mx, my, radius in identity.moles:
        mole = ellipse_sd(canvas.x, canvas.y, mx, my, radius, radius)
        canvas.paint(canvas.coverage(mole) * inside * 0.9, mix(identity.skin, (40, 24, 18), 0.65))


def _draw_nose(canvas: Canvas, identity: Identity, shift: float) -> None:
    x, y = canvas.x, canvas.y
    nx = shift * 1.4  # the nose stands out and moves most
    shade = mix(identity.skin, (0, 0, 0), 0.3)
    for s in (-1, 1):
        ridge = np.maximum(stroke_sd(x - (nx + s * identity.nose_width * 0.42), 0.008),
                           span_sd(y, identity.eye_y + 0.06, identity.nose_length - 0.03))
        canvas.paint(canvas.soft(ridge, 0.03) * 0.3, shade)
        wing = ellipse_sd(x, y, nx + s * identity.nose_width * 0.75, identity.nose_length - 0.01, 0.035, 0.03)
        canvas.paint(canvas.soft(stroke_sd(wing, 0.004), 0.012) * 0.5, shade)
        nostril = ellipse_sd(x, y, nx + s * identity.nose_width * 0.42, identity.nose_length + 0.008, 0.02, 0.011)
        canvas.paint(canvas.coverage(nostril) * 0.85, mix(identity.skin, (20, 10, 10), 0.6))
    tip = ellipse_sd(x, y, nx, identity.nose_length - 0.03, 0.04, 0.035)
    canvas.paint(canvas.soft(tip, 0.04) * 0.25, (255, 250, 245))


def _draw_mouth(canvas: Canvas, identity: Identity, nuisance: Nuisance, shift: float) -> None:
    x, y = canvas.x, canvas.y
    t = (x - shift) / identity.mouth_width
    inside = np.clip(1 - t**2, 0, None)
    line = identity.mouth_y - nuisance.smile * 0.035 * t**2 + nuisance.smile * 0.01
    upper, lower = identity.lip_thickness * 0.8, identity.lip_thickness
    lips = np.maximum(np.maximum(line - upper * inside - y, y - line - lower * inside), np.abs(t) - 1)
    canvas.paint(canvas.coverage(lips), identity.lip)
    seam = np.maximum(stroke_sd(y - line, 0.004), (np.abs(t) - 1.02) * identity.mouth_width)
    canvas.paint(canvas.coverage(seam) * 0.8, mix(identity.lip, (0, 0, 0), 0.55))


def _draw_wrinkles(canvas: Canvas, identity: Identity, eyes: dict, shift: float) -> None:
    strength = float(np.clip((identity.age - 40) / 40, 0, 1))
    if strength <= 0:
        return
    x, y = canvas.x, canvas.y
    colour = mix(identity.skin, (0, 0, 0), 0.22)
    lines = []
    for level in (-0.36, -0.44):  # forehead
        lines.append(np.maximum(stroke_sd(y - (level + 0.25 * (x - shift) ** 2), 0.004), np.abs(x - shift) - 0.22))
    for eye in eyes.values():  # crow's feet fan out from the outer corner
        corner = eye.cx + eye.sign * identity.eye_width * 1.15
        for slope in (-0.5, 0.0, 0.5):
            u = eye.sign * (x - corner)
            lines.append(np.maximum(stroke_sd(y - eye.cy - slope * u, 0.003), span_sd(u, 0.0, 0.06 + 0.2 * identity.eye_width)))
    for s in (-1, 1):  # nasolabial folds
        t = np.clip((y - identity.nose_length) / (identity.mouth_y - identity.nose_length + 0.04), 0, 1)
        fold_x = shift + s * (identity.nose_width * 0.9 + t * (identity.mouth_width - identity.nose_width * 0.6))
        lines.append(np.maximum(stroke_sd(x - fold_x, 0.004), span_sd(y, identity.nose_length, identity.mouth_y + 0.04)))
    canvas.paint(canvas.coverage(np.minimum.reduce(lines)) * 0.55 * strength, colour)


def _draw_hair_front(canvas: Canvas, identity: Identity, face_sd) -> None:
    x, y = canvas.x, canvas.y
    hairline = identity.hairline + 0.45 * x**2 + 0.06 * np.tanh(8 * (x - identity.hair_part)) * 0.5
    fringe = np.maximum(y - hairline, face_sd - 0.02)
    canvas.paint(canvas.coverage(fringe), hair_colour(identity))


def _photograph(canvas: Canvas, nuisance: Nuisance) -> np.ndarray:
    """Light, colour cast, lens blur and sensor noise: the camera's part, seeded."""
    light = nuisance.brightness * (1 + nuisance.light_strength * (np.cos(nuisance.light_angle) * canvas.ix
                                                                    + np.sin(nuisance.light_angle) * canvas.iy))
    cast = np.array([1 + 0.05 * nuisance.warmth, 1.0, 1 - 0.05 * nuisance.warmth], dtype=np.float32)
    image = Image.fromarray(np.clip(np.rint(canvas.rgb * light[..., None] * cast), 0, 255).astype(np.uint8))
    if nuisance.blur > 0:
        image = image.filter(ImageFilter.GaussianBlur(nuisance.blur * canvas.size / 128))
    pixels = np.asarray(image, dtype=np.float32)
    if nuisance.noise > 0:
        pixels = pixels + np.random.default_rng(nuisance.noise_seed).normal(0, nuisance.noise, pixels.shape)
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
