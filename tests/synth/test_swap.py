"""Donor swaps, MedSem-DeID's training targets: the photo's condition and pose, the donor's person and camera."""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medeid.models.deid.donors import synthetic_donor
from medeid.models.deid.model import pose_grid
from medeid.synth.cohort import cohort_rows, patient_from_row, photo_nuisance, render_row
from medeid.synth.conditions import PERIOCULAR_TUMOUR, Condition
from medeid.synth.render import render
from medeid.synth.swap import donor_swap

SIZE = 96


def test_a_swap_onto_the_patient_under_the_photos_camera_is_the_photo_itself():
    """Everything the swap takes from the row (condition, gaze, lids) and from the donor (person, camera)
    is all the renderer draws: swapping the patient onto themselves gives their photo back, and the
    eyes' gaze and opening come from the row, not from the camera given."""
    row = {**cohort_rows(1, 2, seed=3)[1], "width": SIZE}
    patient = patient_from_row(row)
    camera = photo_nuisance(row)
    assert np.array_equal(donor_swap(row, patient.identity, camera, SIZE)[0], render_row(row, SIZE).image)
    elsewhere = dataclasses.replace(camera, gaze_x=0.5, gaze_y=-0.3, eye_openness=0.6)
    assert np.array_equal(donor_swap(row, patient.identity, elsewhere, SIZE)[0], render_row(row, SIZE).image)


def test_a_swap_draws_the_photos_lesion_on_the_donors_own_face():
    rows = [r for r in cohort_rows(40, 1, seed=8) if r["disease"] == PERIOCULAR_TUMOUR]
    row = {**rows[0], "width": SIZE}
    photo = render_row(row, SIZE)
    donor = synthetic_donor(3)
    swapped, lesion = donor_swap(row, donor.identity, donor.camera, SIZE)
    assert lesion.sum() == pytest.approx(photo.lesion_mask.sum(), rel=0.5)  # the same lesion, near its size
    # Drawn alike on both people, while the rest of the face is the donor's own: the lower face is
    # the donor's photo in the photo's pose, pixel for pixel.
    colour = np.abs(swapped[lesion].mean(0) - photo.image[photo.lesion_mask].mean(0))
    assert colour.max() < 30
    pose = photo_nuisance(row)
    posed = dataclasses.replace(donor.camera, rotation=pose.rotation, scale=pose.scale, shift_x=pose.shift_x,
                                shift_y=pose.shift_y)
    lower = slice(round(0.7 * SIZE), SIZE)
    assert np.array_equal(swapped[lower], render(donor.identity, Condition(), posed, SIZE).image[lower])
    assert np.abs(swapped[lower].astype(float) - photo.image[lower]).mean() > 20


def test_the_models_pose_grid_puts_a_frontal_donor_in_the_renderers_pose():
    """MedSem-DeID draws its targets' pose by warping the frontal donor (`pose_grid`): the warp must be
    the renderer's camera, signs and all, or the new face would land beside the old one."""
    donor = synthetic_donor(5)
    camera = dataclasses.replace(donor.camera, rotation=0.1, scale=1.07, shift_x=0.05, shift_y=-0.04)
    posed = render(donor.identity, Condition(), camera, SIZE).image.astype(float)
    frontal = torch.from_numpy(donor.face(SIZE)).permute(2, 0, 1)[None].float()

    def warped(rotation: float, scale: float, shift_x: float, shift_y: float) -> np.ndarray:
        pose = torch.tensor([[rotation, np.log(scale), shift_x, shift_y]], dtype=torch.float32)
        out = F.grid_sample(frontal, pose_grid(pose, SIZE), padding_mode="border", align_corners=False)
        return np.abs(out[0].permute(1, 2, 0).numpy() - posed)[20:-20, 20:-20].mean()

    right = warped(0.1, 1.07, 0.05, -0.04)
    assert right < 0.5 * warped(0.0, 1.0, 0.0, 0.0)  # light and noise are the camera's: not zero
    assert right < 0.5 * min(warped(-0.1, 1.07, 0.05, -0.04), warped(0.1, 1 / 1.07, 0.05, -0.04),
                             warped(0.1, 1.07, -0.05, 0.04))
