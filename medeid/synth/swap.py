"""The ideal swap: a photo's exact condition and photo conditions drawn on somebody else.

The renderer draws the photo again with everything but the person kept: disease, laterality,
severity, the lesion's shape and place, pose, gaze, light, background and camera. Only the identity
(face, skin, eyes, iris, brows, moles, hair...) is another one, drawn afresh for every photo, of the
patient's age and sex. No manifestation-preserving method can do better, so it is the reference
every privacy figure is printed beside, and what an attacker who learns the manifestations can
still find.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from medeid.models.identity import centred_crop
from medeid.synth.cohort import patient_from_row, photo_nuisance
from medeid.synth.identity import Identity, sample_identity
from medeid.synth.nuisance import Nuisance
from medeid.synth.render import render

# What a donor swap takes from the photo besides its condition: the head's in-plane pose (so the face
# and its lesion sit where they sat), where the eyes look and how open they are (strabismus and ptosis
# are read against them). The head's turn (yaw) and expression, the light and the camera stay the
# donor's: the target is the donor's frontal photo moved by a similarity, which MedSem-DeID can draw
# exactly from its bank (`medeid.models.deid.model.pose_grid`), plus the patient's manifestations.
PHOTO_FIELDS = ("rotation", "scale", "shift_x", "shift_y", "gaze_x", "gaze_y", "eye_openness")

IDEAL_SWAP_SEED = 90_210  # its own stream: no patient of any cohort is drawn from it


def swap_identity(row: dict, seed: int = IDEAL_SWAP_SEED) -> Identity:
    """Another person, of the row's age and sex, different for every photo."""
    rng = np.random.default_rng([seed, int(row["cohort_seed"]), int(row["patient_index"]), int(row["photo_index"])])
    return sample_identity(rng, int(row["age"]), str(row["sex"]))


def _synthetic_patient(row: dict):
    if row.get("cohort_seed") is None or row.get("patient_index") is None:
        raise ValueError(f"photo {row.get('photo_id')!r} is not from the synthetic world: it cannot be re-rendered")
    return patient_from_row(row)


def donor_swap(row: dict, identity: Identity, camera: Nuisance, size: int) -> tuple[np.ndarray, np.ndarray]:
    """`identity`'s photo under `camera` with the row's condition, pose, gaze and lids (`PHOTO_FIELDS`):
    MedSem-DeID's paired training target for a donor: (image uint8 (size, size, 3), lesion mask bool),
    cropped as the archive's photos are read."""
    patient = _synthetic_patient(row)
    photo = photo_nuisance(row)
    nuisance = dataclasses.replace(camera, **{name: getattr(photo, name) for name in PHOTO_FIELDS})
    return _cropped(render(identity, patient.condition, nuisance, int(row.get("width") or size)), size)


def _cropped(rendered, size: int) -> tuple[np.ndarray, np.ndarray]:
    mask = centred_crop(rendered.lesion_mask.astype(np.uint8) * 255, size) > 127
    return centred_crop(rendered.image, size), mask


def ideal_swap(row: dict, size: int, seed: int = IDEAL_SWAP_SEED) -> tuple[np.ndarray, np.ndarray]:
    """(image uint8 (size, size, 3), lesion mask bool (size, size)) of the row's photo on another person,
    cropped as the archive's photos are read (`centred_crop`). The row needs the synthetic world's
    columns (cohort_seed, patient_index, photo_index) and its labels."""
    patient = _synthetic_patient(row)
    return _cropped(render(swap_identity(row, seed), patient.condition, photo_nuisance(row),
                           int(row.get("width") or size)), size)
