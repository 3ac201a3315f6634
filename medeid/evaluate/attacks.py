"""The privacy attack suite (DESIGN §3): attackers that look where a full-face recogniser does not.

A de-identified photo keeps the diagnosis, and the diagnosis lives around the eyes, which identify a
person too (periocular recognition is an established biometric). So privacy is judged by every
attacker we can build, each trained on the *training* patients only and never used to train or
select a model:

- the held-out full-face evaluator (`medeid.models.identity`, trained elsewhere);
- a **periocular recogniser**: a small CNN trained on the eye band of original photos;
- an **adaptive attacker**, who knows the method: the same CNN trained on the method's own outputs
  for the training patients (under passwords of its own) with their true identities;
- a **pixel attacker**: the nearest original by the raw pixels of the eye band (finds copies).

Each attack is scored as top-1 re-identification under two gallery protocols: the probe's own
original is in the gallery (`own`), or only the patient's *other* photos are (`others`: an attacker
holding other pictures of the patient). References printed beside every figure: chance, and the
label oracle, who knows only disease, laterality and severity and picks at random among the gallery
patients who share them (diagnoses are quasi-identifiers).

Everything here works on aligned face crops, uint8 RGB (N, R, R, 3); no Ray, no files.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medeid.pixels import to_signed

# The band around the eyes, as fractions of an aligned crop: brows to below the lower lids, both
# canthi with some skin beyond (a little wider than what MedSem-DeID's medical model reads).
BAND_ROWS, BAND_COLUMNS = (0.27, 0.59), (0.14, 0.86)
BAND_SHAPE = (24, 56)  # (rows, columns) the attackers see
PIXEL_SHAPE = (12, 28)  # the pixel attacker's comparison, coarse enough to survive re-encoding
COPY_MAD = 4.0  # mean absolute difference (0..255) of eye bands below which one is a copy of the other
PROTOCOLS = ("own", "others")
PROTOCOL_NAMES = {"own": "own original in the gallery", "others": "other photos only"}


def eye_band(images: np.ndarray, shape: tuple[int, int] = BAND_SHAPE) -> np.ndarray:
    """The eye band of aligned crops, resized to `shape`: float32 (N, rows, cols, 3) in 0..255 (what an
    attacker keeps of a photo: `np.rint(...).astype(np.uint8)` stores it)."""
    size = images.shape[1]
    rows = slice(round(BAND_ROWS[0] * size), round(BAND_ROWS[1] * size))
    cols = slice(round(BAND_COLUMNS[0] * size), round(BAND_COLUMNS[1] * size))
    return np.stack([cv2.resize(i[rows, cols], shape[::-1], interpolation=cv2.INTER_AREA) for i in images]
                    ).astype(np.float32) if len(images) else np.zeros((0, *shape, 3), np.float32)


def eye_band_bytes(images: np.ndarray) -> np.ndarray:
    """The eye bands as an attacker keeps them: uint8 (N, rows, cols, 3)."""
    return np.rint(eye_band(images)).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Matching: top-1 re-identification under a gallery protocol


@dataclass(frozen=True)
class Gallery:
    """Who each gallery photo shows, and which photo it is (to leave a probe's own original out)."""

    patients: np.ndarray  # (G,) patient ids
    photos: np.ndarray  # (G,) photo ids
    labels: np.ndarray | None = None  # (G,) the label oracle's knowledge: "disease/laterality/severity"


def _excluded(query_photos: np.ndarray, gallery: Gallery, protocol: str) -> np.ndarray:
    """(N, G) bool: gallery entries a query may not match (its own original, under `others`)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {PROTOCOLS}")
    if protocol == "own":
        return np.zeros((len(query_photos), len(gallery.photos)), bool)
    return np.asarray(query_photos)[:, None] == np.asarray(gallery.photos)[None, :]


def nearest(scores: np.ndarray, query_photos: np.ndarray, gallery: Gallery, protocol: str) -> np.ndarray:
    """(N,) index of each query's best gallery entry; `scores` (N, G), higher is nearer."""
    scores = np.where(_excluded(query_photos, gallery, protocol), -np.inf, scores)
    return scores.argmax(1)


def top1(scores: np.ndarray, query_patients: np.ndarray, query_photos: np.ndarray, gallery: Gallery,
         protocol: str, valid: np.ndarray | None = None) -> float:
    """Share of queries whose best gallery entry shows their patient. An invalid query (no face found)
    matches nobody."""
    if not len(scores):
        return 0.0
    hits = gallery.patients[nearest(scores, query_photos, gallery, protocol)] == np.asarray(query_patients)
    if valid is not None:
        hits &= valid
    return float(hits.mean())


def chance(query_patients: np.ndarray, gallery: Gallery) -> float:
    """Top-1 of a guess among the gallery's patients."""
    return 1.0 / max(1, len(set(gallery.patients.tolist())))


def label_oracle(query_patients: np.ndarray, query_photos: np.ndarray, query_labels: np.ndarray, gallery: Gallery,
                 protocol: str) -> float:
    """Expected top-1 of an attacker who knows only the probe's disease, laterality and severity and
    picks at random among the gallery patients who share them (and whom the protocol leaves in)."""
    if gallery.labels is None:
        raise ValueError("the label oracle needs the gallery's labels")
    allowed = ~_excluded(query_photos, gallery, protocol)
    expected = []
    for i, (patient, label) in enumerate(zip(query_patients, query_labels)):
        candidates = set(gallery.patients[allowed[i] & (gallery.labels == label)].tolist())
        expected.append(1.0 / len(candidates) if patient in candidates else 0.0)
    return float(np.mean(expected)) if expected else 0.0


def cosine_scores(queries: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    return queries @ gallery.T


def pixel_vectors(images: np.ndarray) -> np.ndarray:
    """The pixel attacker's view: the eye band, coarse, flattened (0..255)."""
    return eye_band(images, PIXEL_SHAPE).reshape(len(images), -1)


def band_pixels(bands: np.ndarray) -> np.ndarray:
    """The pixel attacker's view of stored eye bands (`eye_band_bytes`), as `pixel_vectors` of photos."""
    if not len(bands):
        return np.zeros((0, 1), np.float32)
    return np.stack([cv2.resize(b, PIXEL_SHAPE[::-1], interpolation=cv2.INTER_AREA) for b in bands]
                    ).reshape(len(bands), -1).astype(np.float32)


def pixel_scores(queries: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """Negative mean absolute difference (0..255) between pixel vectors: higher is nearer."""
    return -np.stack([np.abs(q[None] - gallery).mean(1) for q in queries]) if len(queries) else \
        np.zeros((0, len(gallery)), np.float32)


def pixel_copies(queries: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """(N,) bool: the query's eye band is a copy of some gallery photo's (mean absolute difference below
    COPY_MAD on a 0..255 scale; re-encoding and resampling stay well under it, a redrawn band does not)."""
    if not len(gallery):
        return np.zeros(len(queries), bool)
    return (-pixel_scores(pixel_vectors(queries), pixel_vectors(gallery))).min(1) < COPY_MAD


# ---------------------------------------------------------------------------------------------
# The periocular recogniser: a small CNN with a cosine-softmax (CosFace) head


class PeriocularNet(nn.Module):
    def __init__(self, classes: int, dim: int = 128, widths: tuple[int, ...] = (24, 48, 96)):
        super().__init__()
        layers, cin = [], 3
        for w in widths:
            layers += [nn.Conv2d(cin, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                       nn.Conv2d(w, w, 3, 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            cin = w
        self.features = nn.Sequential(*layers)
        rows, cols = (-(-s // 2 ** len(widths)) for s in BAND_SHAPE)
        self.embed = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(cin * rows * cols, dim),
                                   nn.BatchNorm1d(dim))
        self.classes = nn.Parameter(torch.randn(classes, dim) * 0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Eye bands (N, 3, rows, cols) in [-1, 1] -> L2-normalised embeddings (N, dim)."""
        return F.normalize(self.embed(self.features(x)), dim=1)

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        return embeddings @ F.normalize(self.classes, dim=1).T


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Small shifts and photometric jitter: what changes between two photos of one person."""
    n = len(x)
    dy, dx = (int(v) for v in torch.randint(-2, 3, (2,), generator=generator))
    x = torch.roll(x, (dy, dx), (2, 3))
    gain = 1 + 0.15 * (torch.rand(n, 1, 1, 1, generator=generator) - 0.5)
    bias = 0.1 * (torch.rand(n, 3, 1, 1, generator=generator) - 0.5)
    return (x * gain + bias).clamp(-1, 1)


@dataclass
class Recogniser:
    """A trained periocular (or adaptive) attacker: eye-band embeddings for face crops."""

    net: PeriocularNet
    trained_on: str  # what its training photos were: "originals", or a method's name

    def embed(self, images: np.ndarray) -> np.ndarray:
        """(N, dim) L2-normalised embeddings of face crops (N, R, R, 3) uint8."""
        return self.embed_bands(eye_band(images))

    @torch.no_grad()
    def embed_bands(self, bands: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """The same from eye bands (`eye_band`, uint8 or float 0..255)."""
        self.net.eval()
        if not len(bands):
            return np.zeros((0, self.net.classes.shape[1]), np.float32)
        bands = np.asarray(bands, np.float32)
        return torch.cat([self.net(to_signed(bands[i:i + batch_size]))
                          for i in range(0, len(bands), batch_size)]).numpy()


def train_recogniser(bands: np.ndarray, patients: np.ndarray, trained_on: str = "originals", epochs: int = 20,
                     batch_size: int = 64, scale: float = 24.0, margin: float = 0.2, seed: int = 0,
                     log=print) -> Recogniser:
    """Train the eye-band CNN to tell the training patients apart (CosFace: cosine softmax with an
    additive margin), from their photos' eye bands (`eye_band`) and patient ids."""
    names, labels = np.unique(np.asarray(patients), return_inverse=True)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    net = PeriocularNet(len(names))
    x, y = to_signed(np.asarray(bands, np.float32)), torch.from_numpy(labels.astype(np.int64))
    steps = epochs * -(-len(x) // batch_size)
    optimiser = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=3e-3, total_steps=steps)
    started = time.monotonic()
    net.train()
    for epoch in range(epochs):
        order, total = torch.randperm(len(x), generator=generator), 0.0
        for start in range(0, len(x), batch_size):
            batch = order[start:start + batch_size]
            if len(batch) < 2:  # batch norm needs two
                continue
            logits = net.logits(net(_augment(x[batch], generator)))
            logits = logits - margin * F.one_hot(y[batch], len(names))
            loss = F.cross_entropy(scale * logits, y[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += loss.item() * len(batch)
        if log and (epoch + 1) % 5 == 0:
            log(f"[attacks] {trained_on}: epoch {epoch + 1}/{epochs}, loss {total / len(x):.3f} "
                f"({time.monotonic() - started:.0f} s)")
    return Recogniser(net.eval(), trained_on)
