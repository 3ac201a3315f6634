"""The donor bank: the people whose faces MedSem-DeID draws new identities from.

Donors are people the synthetic world's renderer draws and no cohort contains (their own seed
stream): frontal and centred like an aligned crop, under a clinic camera's lighting, walls,
clothing and noise, so no two donors share a backdrop. The renderer can draw each donor again with
any photo's condition and pose, which is what MedSem-DeID trains on (`medeid.synth.swap.donor_swap`),
and with the condition the medical model reads on a photo, which is the face MedSem-DeID starts its
new face from (`donor_with_condition`, `condition_from_reading`): the donor already shows the
findings, and the network puts them in the photo's pose, gaze and lids and keeps its lesion. On
photos as on donors the signs then come from the medical reading, not from the patient's pixels.
A real deployment's donors would be MeMa faces with labelled pairs drawn by its generator (the
paper's setting); the demo's tiny generator cannot draw them yet.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from medeid.synth.conditions import (
    DISEASES,
    HEALTHY,
    LATERALITIES,
    PERIOCULAR_TUMOUR,
    STRABISMUS,
    Condition,
    allowed_lateralities,
)
from medeid.synth.identity import SEXES, Identity, sample_identity
from medeid.synth.nuisance import Nuisance, sample_nuisance
from medeid.synth.render import render

DONOR_STREAM = 7_301  # seeds no cohort uses: donors are nobody's photos


@dataclasses.dataclass(frozen=True)
class SyntheticDonor:
    """A donor the renderer can draw again with any condition and pose (MedSem-DeID's paired targets)."""

    identity: Identity
    camera: Nuisance  # light, walls, clothing and noise; no pose: frontal and centred

    def face(self, size: int, condition: Condition = Condition()) -> np.ndarray:
        """uint8 (size, size, 3), frontal: healthy, or showing `condition`."""
        return render(self.identity, condition, self.camera, size).image


def synthetic_donor(index: int, seed: int = 0) -> SyntheticDonor:
    rng = np.random.default_rng([DONOR_STREAM, seed, index])
    identity = sample_identity(rng, int(rng.integers(20, 81)), SEXES[index % len(SEXES)])
    # The camera's variation without its geometry: the patient's eyes go where the donor's were.
    camera = dataclasses.replace(sample_nuisance(rng), rotation=0.0, scale=1.0, shift_x=0.0, shift_y=0.0, yaw=0.0,
                                 gaze_x=0.0, gaze_y=0.0, eye_openness=1.0, smile=0.0)
    return SyntheticDonor(identity, camera)


@functools.lru_cache(maxsize=4096)
def _donor(index: int, seed: int) -> SyntheticDonor:
    return synthetic_donor(index, seed)


def donor_with_condition(index: int, seed: int, condition: Condition, size: int) -> np.ndarray:
    """Donor `index` of the bank drawn with `seed`, showing `condition`: uint8 (size, size, 3), frontal."""
    return _donor(index, seed).face(size, condition)


def synthetic_donors(count: int, size: int, seed: int = 0) -> list[np.ndarray]:
    return [synthetic_donor(i, seed).face(size) for i in range(count)]


def condition_from_reading(disease: np.ndarray, laterality: np.ndarray, severity: np.ndarray,
                           pattern_seed: int = 0) -> Condition:
    """The condition a donor is drawn with, from the medical model's class probabilities for one photo:
    the likeliest disease, its likeliest possible side and grade. A tumour is not drawn: the model's
    lesion gate keeps the photo's own lesion where it is (its site and shape are not in the reading)."""
    name = DISEASES[int(np.argmax(disease))]
    if name in (HEALTHY, PERIOCULAR_TUMOUR):
        return Condition()
    sides = allowed_lateralities(name)
    side = max(sides, key=lambda s: laterality[LATERALITIES.index(s)])
    grade = 1 + int(np.argmax(severity[1:]))
    variant = ("esotropia", "exotropia")[pattern_seed % 2] if name == STRABISMUS else ""
    return Condition(disease=name, laterality=side, severity=grade, variant=variant, pattern_seed=pattern_seed)
