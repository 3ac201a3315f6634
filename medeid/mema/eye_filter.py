"""The eye-band half of MeMa's identity filter: every drawn face against every real patient's eye
band, before anything is released, by the two attackers that look where a full-face recogniser does
not (`medeid.evaluate.attacks`):

- a **periocular recogniser of the filter's own**, trained at the build's start on every real
  patient's eye bands. Its threshold is stricter than the audit's (the cosine that FILTER_FAR of
  real photos reach with their nearest photo of another patient, against the audit's 1e-3), because
  the audit afterwards trains *another* network (another seed) and judges by that one: a filter that
  merely fooled its own recogniser would fail there;
- the **pixel attacker**: an eye band within COPY_MARGIN x COPY_MAD of a real photo's is a copy,
  unless different patients' real photos come that close to each other (a crowded world of look-alike
  renders): then the bar is where FILTER_FAR of real photos have their nearest photo of another
  patient, never under the audit's COPY_MAD.

The check (`EyeCheck`) travels to the filter actors through Ray's object store: the network's weights,
the real photos' embeddings (N x 128) and coarse pixels (N x 1,008), a few MB for a demo archive.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from medeid import storage
from medeid.evaluate.attacks import (
    COPY_MAD,
    PeriocularNet,
    Recogniser,
    band_pixels,
    cosine_scores,
    eye_band_bytes,
    pixel_scores,
)
from medeid.mema.attack_audit import MAX_THRESHOLD_PHOTOS, PERIOCULAR_EPOCHS, read_real_bands, train_auditor
from medeid.models.generator import resolve_uri
from medeid.models.identity_index import fixed_sample, reached_by_share

FILTER_SEED = 1  # the audit's recogniser is seed 0: two networks, so the audit is not the filter's own judge
FILTER_FAR = 1e-2
COPY_MARGIN = 2.0
CHUNK = 256


@dataclass
class EyeCheck:
    """What the filter needs to judge a drawn face's eye band; built once by `prepare_eye_check`."""

    state: dict  # the periocular network's weights
    classes: int
    threshold: float  # periocular cosine at or above which a drawn face matches a real patient
    copy_distance: float  # mean absolute eye-band difference (0..255) under which it is a copy
    gallery: np.ndarray  # (N, dim) float32 embeddings of the real photos' eye bands
    pixels: np.ndarray  # (N, P) float32 coarse eye-band pixels of the real photos
    figures: dict  # the recogniser's strength on the real photos (`attack_audit.train_auditor`)

    def recogniser(self) -> Recogniser:
        net = PeriocularNet(self.classes)
        net.load_state_dict(self.state)
        return Recogniser(net.eval(), "real patients (MeMa's filter)")

    def score(self, images: list[np.ndarray], recogniser: Recogniser | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Each image's highest periocular cosine and smallest eye-band pixel difference to a real photo."""
        recogniser = recogniser or self.recogniser()
        bands = eye_band_bytes(np.stack(images))
        similarity, distance = [], []
        for start in range(0, len(bands), CHUNK):
            chunk = bands[start:start + CHUNK]
            similarity.append(cosine_scores(recogniser.embed_bands(chunk), self.gallery).max(1))
            distance.append((-pixel_scores(band_pixels(chunk), self.pixels)).min(1))
        return np.concatenate(similarity), np.concatenate(distance)


def prepare_eye_check(archive_root: str, size: int, settings: storage.S3Settings | None = None,
                      epochs: int = PERIOCULAR_EPOCHS, far: float = FILTER_FAR, log=print) -> EyeCheck:
    """Train the filter's periocular recogniser on every real photo's eye band (decoded at the drawn
    faces' `size`, so a copied band compares pixel for pixel) and keep what the filter compares with."""
    real = read_real_bands(archive_root, size, settings)
    recogniser, figures = train_auditor(real, epochs, log, far=far, seed=FILTER_SEED)
    pixels = band_pixels(real.bands)
    figures["strangers_mad"] = strangers_distance(pixels, real.patients, far)
    return EyeCheck(state={k: v.detach().clone() for k, v in recogniser.net.state_dict().items()},
                    classes=int(recogniser.net.classes.shape[0]), threshold=float(figures["threshold"]),
                    copy_distance=max(COPY_MAD, min(COPY_MARGIN * COPY_MAD, figures["strangers_mad"])),
                    gallery=recogniser.embed_bands(real.bands), pixels=pixels, figures=figures)


def strangers_distance(pixels: np.ndarray, patients: np.ndarray, far: float) -> float:
    """The eye-band pixel difference (0..255) under which only a share `far` of the real photos have
    their nearest photo of another patient: how close two different people's bands come."""
    rows = fixed_sample(len(pixels), MAX_THRESHOLD_PHOTOS)  # a fixed sample of photos, against every photo
    similarity = pixel_scores(pixels[rows], pixels)  # negative differences: higher is nearer
    similarity[patients[rows][:, None] == patients[None, :]] = -np.inf
    return -reached_by_share(similarity.max(1), far)


def generator_resolution(uri: str, settings: storage.S3Settings | None = None) -> int:
    """The side of the images a diffusers pipeline draws by default: its UNet's sample size times the
    VAE's scale factor (2 ** (VAE blocks - 1)), as the pipeline itself computes it."""
    root = resolve_uri(uri)
    unet = json.loads(storage.read_bytes(storage.join(root, "unet/config.json"), settings))
    vae = json.loads(storage.read_bytes(storage.join(root, "vae/config.json"), settings))
    return int(unet["sample_size"]) * 2 ** (len(vae["block_out_channels"]) - 1)

