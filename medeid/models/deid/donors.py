"""The donor bank: the people whose faces MedSem-DeID draws new identities from.

Donors are people the synthetic world's renderer draws and no cohort contains (their own seed
stream): frontal and centred like an aligned crop, under a clinic camera's lighting, walls,
clothing and noise, so no two donors share a backdrop. The renderer can draw each donor again with
any photo's condition and pose, which is what MedSem-DeID trains on (`medeid.synth.swap.donor_swap`).
A real deployment's donors would be MeMa faces with labelled pairs drawn by its generator (the
paper's setting); the demo's tiny generator cannot draw them yet.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from medeid.synth.conditions import Condition
from medeid.synth.identity import SEXES, Identity, sample_identity
from medeid.synth.nuisance import Nuisance, sample_nuisance
from medeid.synth.render import render

DONOR_STREAM = 7_301  # seeds no cohort uses: donors are nobody's photos


@dataclasses.dataclass(frozen=True)
class SyntheticDonor:
    """A donor the renderer can draw again with any condition and pose (MedSem-DeID's paired targets)."""

    identity: Identity
    camera: Nuisance  # light, walls, clothing and noise; no pose: frontal and centred

    def face(self, size: int) -> np.ndarray:
        return render(self.identity, Condition(), self.camera, size).image


def synthetic_donor(index: int, seed: int = 0) -> SyntheticDonor:
    rng = np.random.default_rng([DONOR_STREAM, seed, index])
    identity = sample_identity(rng, int(rng.integers(20, 81)), SEXES[index % len(SEXES)])
    # The camera's variation without its geometry: the patient's eyes go where the donor's were.
    camera = dataclasses.replace(sample_nuisance(rng), rotation=0.0, scale=1.0, shift_x=0.0, shift_y=0.0, yaw=0.0,
                                 gaze_x=0.0, gaze_y=0.0, eye_openness=1.0, smile=0.0)
    return SyntheticDonor(identity, camera)


def synthetic_donors(count: int, size: int, seed: int = 0) -> list[np.ndarray]:
    return [synthetic_donor(i, seed).face(size) for i in range(count)]
