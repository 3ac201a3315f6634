"""Every attacker against every method's photos: the privacy half of the evaluation (DESIGN §3).

`attack_figures` scores one method's de-identified held-out photos with the attack suite
(`medeid.evaluate.attacks`) under both gallery protocols; `privacy_bars` holds MedSem-DeID to the
bars, each attacker against its own figure on the ideal swap. Inputs are small per-photo arrays
(eye bands and evaluator embeddings), so this half needs no model but the attackers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medeid.evaluate.attacks import (
    PROTOCOL_NAMES,
    PROTOCOLS,
    Gallery,
    Recogniser,
    band_pixels,
    chance,
    cosine_scores,
    label_oracle,
    pixel_scores,
    top1,
)
from medeid.models.deid.align import PASTE_FEATHER
from medeid.models.medical import eye_box

FULL_FACE, PERIOCULAR, ADAPTIVE, ADAPTIVE_COPIES, PIXEL = (
    "full-face evaluator", "periocular", "adaptive (vs originals)", "adaptive (vs its own copies)", "pixel")
ATTACKERS = (FULL_FACE, PERIOCULAR, ADAPTIVE, ADAPTIVE_COPIES, PIXEL)
BAR_PROTOCOL = "others"  # bars hold on the harder protocol for the method: only the patient's other photos
FULL_FACE_BAR, FLOOR_BAR, SWAP_MARGIN = 0.05, 0.05, 0.03
PERIOCULAR_STRENGTH_BAR = 0.90  # top-1 on originals (BAR_PROTOCOL): an attacker that is an attacker


@dataclass(frozen=True)
class Probes:
    """What the attackers see of a set of photos, one entry a photo."""

    bands: np.ndarray  # (N, rows, cols, 3) uint8 eye bands (`attacks.eye_band`)
    face: np.ndarray  # (N, D) evaluator embeddings; zeros where no face was found


@dataclass(frozen=True)
class Truth:
    """Who the held-out photos show: the gallery of originals and the queries share it."""

    patients: np.ndarray  # (N,) patient ids
    photos: np.ndarray  # (N,) photo ids
    labels: np.ndarray  # (N,) "disease/laterality/severity": what the label oracle knows

    @property
    def gallery(self) -> Gallery:
        return Gallery(self.patients, self.photos, self.labels)


def attack_figures(truth: Truth, originals: Probes, probes: Probes, periocular: Recogniser,
                   adaptive: Recogniser | None = None, copies: Probes | None = None) -> dict[str, dict[str, float]]:
    """{attacker: {protocol: top-1 re-identification}} of one method's held-out photos. `adaptive` is
    the attacker trained on this method's outputs for the training patients; `copies` are the held-out
    originals as the adaptive attacker de-identified them itself (its own passwords)."""
    gallery, found = truth.gallery, np.linalg.norm(probes.face, axis=1) > 0
    scores = {
        FULL_FACE: (cosine_scores(probes.face, originals.face), found),
        PERIOCULAR: (cosine_scores(periocular.embed_bands(probes.bands), periocular.embed_bands(originals.bands)),
                     None),
        PIXEL: (pixel_scores(band_pixels(probes.bands), band_pixels(originals.bands)), None),
    }
    if adaptive is not None:
        queries = adaptive.embed_bands(probes.bands)
        scores[ADAPTIVE] = (cosine_scores(queries, adaptive.embed_bands(originals.bands)), None)
        if copies is not None:
            scores[ADAPTIVE_COPIES] = (cosine_scores(queries, adaptive.embed_bands(copies.bands)), None)
    return {attacker: {protocol: top1(s, truth.patients, truth.photos, gallery, protocol, valid)
                       for protocol in PROTOCOLS}
            for attacker, (s, valid) in scores.items()}


def references(truth: Truth) -> dict[str, dict[str, float]]:
    """Chance and the label oracle under each protocol."""
    gallery = truth.gallery
    return {"chance": {p: chance(truth.patients, gallery) for p in PROTOCOLS},
            "label oracle": {p: label_oracle(truth.patients, truth.photos, truth.labels, gallery, p)
                             for p in PROTOCOLS}}


def worst(figures: dict[str, dict[str, float]], protocol: str = BAR_PROTOCOL) -> tuple[str, float]:
    """The attacker that re-identifies most, and its figure."""
    attacker = max(figures, key=lambda a: figures[a][protocol])
    return attacker, figures[attacker][protocol]


def swap_bar(attacker: str, ideal: dict[str, dict[str, float]]) -> float:
    """The bar of a manifestation-keeping method against `attacker`: max(5 %, the ideal swap + 3 points)."""
    if attacker == FULL_FACE:
        return FULL_FACE_BAR
    fallback = ADAPTIVE if attacker == ADAPTIVE_COPIES else attacker  # a method without copies of its own
    reference = ideal.get(attacker, ideal.get(fallback, {})).get(BAR_PROTOCOL)
    return max(FLOOR_BAR, (reference or 0.0) + SWAP_MARGIN)


def privacy_bars(method: dict[str, dict[str, float]], ideal: dict[str, dict[str, float]],
                 what: str = "") -> list[dict]:
    """A bar per attacker (BAR_PROTOCOL): the full-face evaluator at most 5 %; every other attacker at
    most max(5 %, its own figure on the ideal swap + 3 points)."""
    bars = []
    for attacker in ATTACKERS:
        if attacker not in method:
            continue
        limit, value = swap_bar(attacker, ideal), method[attacker][BAR_PROTOCOL]
        rule = f"<= {limit:.1%}" + ("" if attacker == FULL_FACE else " (max(5 %, ideal swap + 3 points))")
        bars.append({"measure": f"re-identification{what}, {attacker} ({PROTOCOL_NAMES[BAR_PROTOCOL]})",
                     "bar": rule, "value": value, "unit": "%", "passed": bool(value <= limit + 1e-9)})
    return bars


# ---------------------------------------------------------------------------------------------
# One face: the seam figure


def seam_steps(images: np.ndarray) -> np.ndarray:
    """(N, 2) per photo: the mean colour step across the four sides of the eye region (where a design
    that keeps the patient's eyes pastes them), and the same step across lines further out, where no
    border runs. Each step spans a few pixels either side of its line, so a feathered border (blended
    over a few pixels, a step that no single pair of neighbours shows) counts in full."""
    if not len(images):
        return np.zeros((0, 2), np.float32)
    size = images.shape[1]
    x = images.astype(np.float32)
    rows, columns = eye_box(size)
    top, bottom, left, right = rows.start, rows.stop, columns.start, columns.stop
    span = max(2, round(0.04 * size))
    gap = 3 * span

    def across_row(row: int) -> np.ndarray:  # between rows row-span-1 and row+span, along the region's width
        return np.abs(x[:, row + span, left:right] - x[:, row - span - 1, left:right]).mean((1, 2))

    def across_column(col: int) -> np.ndarray:
        return np.abs(x[:, top:bottom, col + span] - x[:, top:bottom, col - span - 1]).mean((1, 2))

    border = (across_row(top) + across_row(bottom) + across_column(left) + across_column(right)) / 4
    outside = (across_row(top - gap) + across_row(bottom + gap) + across_column(left - gap)
               + across_column(right + gap)) / 4
    return np.stack([border, outside], 1).astype(np.float32)


def frame_steps(images: np.ndarray, feather: float = PASTE_FEATHER, corner: float = 0.25) -> np.ndarray:
    """(N, 2) per photo: the colour step between the crop's outermost pixels and those just inside the
    paste's feathered edge (the photo's own pixels against the model's: a pasted square shows as a
    frame there), and the same step one feather width further in. Read along the sides of the two top
    corners, where a face crop shows the scene behind the head: elsewhere its hair and chin cross
    the edge, in the originals as much as anywhere."""
    if not len(images):
        return np.zeros((0, 2), np.float32)
    size = images.shape[1]
    x = images.astype(np.float32)
    width, span, reach = max(1, round(feather * size)), max(2, round(0.03 * size)), round(corner * size)

    def strips(depth: int) -> np.ndarray:  # (N, positions, 3): `span` pixels deep, `depth` px in from the edge
        top, right = slice(depth, depth + span), slice(size - depth - span, size - depth)
        return np.concatenate([x[:, top, width:reach].mean(1), x[:, width:reach, top].mean(2),
                               x[:, top, size - reach:size - width].mean(1), x[:, width:reach, right].mean(2)], 1)

    edge, inside, further = strips(0), strips(width), strips(2 * width)
    return np.stack([np.abs(inside - edge).mean((1, 2)), np.abs(further - inside).mean((1, 2))], 1).astype(np.float32)


def seam_figure(steps: np.ndarray) -> float | None:
    """How visible the eye region's border is: the step across it over the step beside it (`seam_steps`).
    Near the originals' own figure for a photo in one piece; well above it where a band is pasted into
    another face."""
    if not len(steps):
        return None
    return float(steps[:, 0].mean() / max(float(steps[:, 1].mean()), 1e-6))
