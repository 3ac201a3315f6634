"""The donor bank: the people whose faces MedSem-DeID draws new identities from.

Donors are people the synthetic world's renderer draws and no cohort contains (their own seed
stream): frontal and centred like an aligned crop, under a clinic camera's lighting, walls,
clothing and noise, so no two donors share a backdrop. The renderer can draw each donor again with
any photo's condition and pose, which is what MedSem-DeID trains on (`medeid.synth.swap.donor_swap`),
and with the condition the medical model reads on a photo, which is the face MedSem-DeID starts its
new face from (`bank_donor`, `matching_condition`): the donor already shows the
findings, and the network puts them in the photo's pose, gaze and lids and keeps its lesion. On
photos as on donors the signs then come from the medical reading, not from the patient's pixels.
A real deployment's donors would be MeMa faces with labelled pairs drawn by its generator (the
paper's setting); the demo's tiny generator cannot draw them yet.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING

import numpy as np
import torch

from medeid.synth.conditions import (
    DISEASES,
    HEALTHY,
    PERIOCULAR_TUMOUR,
    SEVERITIES,
    STRABISMUS,
    Condition,
    allowed_lateralities,
)
from medeid.synth.identity import SEXES, Identity, sample_identity
from medeid.synth.nuisance import Nuisance, sample_nuisance
from medeid.synth.render import render

if TYPE_CHECKING:
    from medeid.models.medical import MedicalNet

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
def bank_donor(index: int, seed: int) -> SyntheticDonor:
    """Donor `index` of the bank drawn with `seed`, kept: inference draws the same few donors again."""
    return synthetic_donor(index, seed)


@functools.lru_cache(maxsize=4096)
def donor_subject(index: int, seed: int, size: int) -> np.ndarray:
    """Where donor `index` of the bank drawn with `seed` is in their frontal face: float32 (size, size)
    in [0, 1], 0 on their wall and clothing (`medeid.models.deid.scene`). The same for any condition."""
    person = bank_donor(index, seed)
    return render(person.identity, Condition(), person.camera, size).subject


def synthetic_donors(count: int, size: int, seed: int = 0) -> list[np.ndarray]:
    return [synthetic_donor(i, seed).face(size) for i in range(count)]


READING_HEADS = ("disease", "laterality", "severity")


def candidate_conditions(disease: str, pattern_seed: int = 0) -> list[Condition]:
    """Every way the renderer can draw `disease`: each side it takes, each grade, each squint direction.
    A tumour is not drawn (the model's lesion gate keeps the photo's own lesion: its site and shape
    are not in a reading), so healthy and tumour give the healthy face alone."""
    if disease in (HEALTHY, PERIOCULAR_TUMOUR):
        return [Condition()]
    variants = ("esotropia", "exotropia") if disease == STRABISMUS else ("",)
    return [Condition(disease=disease, laterality=side, severity=grade, variant=variant, pattern_seed=pattern_seed)
            for side in allowed_lateralities(disease) for grade in SEVERITIES[1:] for variant in variants]


@functools.cache
def candidate_rows() -> dict[str, slice]:
    """Where each disease's `candidate_conditions` sit in a donor's row of `read_drawn` (one fixed order)."""
    rows, start = {}, 0
    for disease in DISEASES:
        rows[disease] = slice(start, start + len(candidate_conditions(disease)))
        start += rows[disease].stop - rows[disease].start
    return rows


def candidate_count() -> int:
    return max(rows.stop for rows in candidate_rows().values())


@torch.no_grad()
def read_drawn(person: SyntheticDonor, size: int, medical: MedicalNet) -> dict[str, np.ndarray]:
    """The medical model's reading of `person` drawn with every disease's candidates (vessel pattern 0), all
    diseases at once: (candidates, classes) a head, rows as `candidate_rows`. A model keeps this for its
    whole bank (`MedSemDeIDNet.drawn_of`): drawing is the slow part, and every donor meets every disease."""
    faces = np.stack([person.face(size, c) for disease in DISEASES for c in candidate_conditions(disease)])
    device = next(medical.parameters()).device
    return {h: p.cpu().numpy() for h, p in medical.classify(torch.from_numpy(faces).to(device)).items()}


def matching_condition(reading: dict[str, np.ndarray], person: SyntheticDonor, medical: MedicalNet, size: int,
                       pattern_seed: int = 0, drawn: dict[str, np.ndarray] | None = None) -> Condition:
    """The condition to draw `person` with so that the medical model reads the drawn face as it read the
    photo. `reading`: its class probabilities for one photo (`READING_HEADS`). Among the likeliest
    disease's `candidate_conditions`, the one whose drawing's reading is closest (KL divergence over
    the three heads). Why not the argmax side and grade: the severity head is the least sure, and a
    mild squint or ptosis drawn on a stranger reads as healthy. In-process (400 patients, drawings in
    the photo's pose on another donor, tumours aside), the disease was read right on the drawings
    97.8 % as often as on the photos with the match, 90.5 % with the argmax. `pattern_seed` picks the
    vessel pattern, which no reading holds. `drawn`: `person`'s `read_drawn`, when the caller keeps it
    (else drawn here, and kept for the process)."""
    disease = DISEASES[int(np.argmax(reading["disease"]))]
    candidates = candidate_conditions(disease)
    if len(candidates) == 1:
        return candidates[0]
    if drawn is None:
        drawn = drawn_readings(person, disease, size, medical)
    else:
        drawn = {h: torch.as_tensor(drawn[h][candidate_rows()[disease]]) for h in READING_HEADS}
    divergence = sum((torch.from_numpy(reading[h]).clamp_min(1e-6).log() - drawn[h].clamp_min(1e-6).log())
                     .mul(torch.from_numpy(reading[h])).sum(1) for h in READING_HEADS)
    return dataclasses.replace(candidates[int(divergence.argmin())], pattern_seed=pattern_seed)


@functools.lru_cache(maxsize=2048)
@torch.no_grad()
def drawn_readings(person: SyntheticDonor, disease: str, size: int, medical: MedicalNet) -> dict[str, torch.Tensor]:
    """The medical model's reading of `person` drawn with each of `disease`'s candidates (vessel pattern 0),
    (K, classes) a head on the CPU. Kept: a donor comes back for many photos, and drawing is the slow part
    (~10 faces of ~50 ms a disease)."""
    faces = torch.from_numpy(np.stack([person.face(size, c) for c in candidate_conditions(disease)]))
    return {h: p.cpu() for h, p in medical.classify(faces.to(next(medical.parameters()).device)).items()}
