"""Donor banks: the faces MedSem-DeID draws new identities around.

- `mema`: the released faces of a MeMa build, synthetic and privacy-audited (no face matches a real
  patient). What a real deployment uses, with MeMa generated at GPU scale.
- `synthetic`: faces the synthetic world's renderer draws for people who are not in any cohort
  (their own seed stream), frontal and centred like an aligned crop, under a clinic camera's
  lighting, walls, clothing and noise, so no two donors share a backdrop. The demo's tiny MeMa generator, trained for
  minutes on two cores, draws smeared lower faces; these stand in for what a GPU-trained one draws.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from medeid import codecs, storage
from medeid.pipelines.mema import read_landed
from medeid.synth.conditions import Condition
from medeid.synth.identity import SEXES, sample_identity
from medeid.synth.nuisance import sample_nuisance
from medeid.synth.render import render

SOURCES = ("mema", "synthetic")
DONOR_STREAM = 7_301  # seeds no cohort uses: donors are nobody's photos


def synthetic_donors(count: int, size: int, seed: int = 0) -> list[np.ndarray]:
    faces = []
    for i in range(count):
        rng = np.random.default_rng([DONOR_STREAM, seed, i])
        identity = sample_identity(rng, int(rng.integers(20, 81)), SEXES[i % len(SEXES)])
        # The camera's variation without its geometry: the patient's eyes go where the donor's were.
        camera = dataclasses.replace(sample_nuisance(rng), rotation=0.0, scale=1.0, shift_x=0.0, shift_y=0.0, yaw=0.0,
                                     gaze_x=0.0, gaze_y=0.0, eye_openness=1.0)
        faces.append(render(identity, Condition(), camera, size).image)
    return faces


def mema_donors(mema_uri: str, settings: storage.S3Settings | None = None) -> list[np.ndarray]:
    table = read_landed(mema_uri, "shards", ["sample_id", "image"], settings).sort_by("sample_id")
    return [codecs.decode(b) for b in table.column("image").to_pylist()]


def donor_images(source: str, *, size: int, count: int, mema_uri: str | None = None, seed: int = 0,
                 settings: storage.S3Settings | None = None) -> list[np.ndarray]:
    if source == "synthetic":
        return synthetic_donors(count, size, seed)
    if source == "mema":
        if not mema_uri:
            raise ValueError("deid.donors is 'mema': give the MeMa build to draw donors from (--mema)")
        return mema_donors(mema_uri, settings)[:count]
    raise ValueError(f"unknown donor source {source!r}; expected one of {SOURCES}")
