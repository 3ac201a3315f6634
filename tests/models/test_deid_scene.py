"""The new head goes into the photo's own scene: the colours along the crop's border are the photo's,
so no square shows where the crop is pasted back; the head itself keeps the donor's colours."""

from dataclasses import asdict

import numpy as np
import torch

from medeid.models.deid.api import MedSemDeID, donor_choice
from medeid.models.deid.donors import donor_subject, synthetic_donors
from medeid.models.deid.model import DeidNetConfig, MedSemDeIDNet, donor_bank
from medeid.models.deid.scene import GRID, harmonic_fill, match_scene
from medeid.models.medical import EYE_COLUMNS, EYE_ROWS, MedicalNet, MedicalNetConfig
from medeid.passwords import derive_model_key

SIZE = 64


def test_the_fill_is_harmonic_a_linear_border_gives_the_same_plane_inside():
    rows, cols = np.meshgrid(np.arange(GRID), np.arange(GRID), indexing="ij")
    plane = torch.from_numpy(np.stack([0.3 * rows - 0.1 * cols, 0.2 * cols + 1.0]).astype(np.float32))[None]
    border = plane.clone()
    border[:, :, 1:-1, 1:-1] = 7.0  # the interior is ignored
    np.testing.assert_allclose(harmonic_fill(border).numpy(), plane.numpy(), atol=1e-4)


def test_the_scene_moves_to_the_photos_colours_and_the_head_does_not():
    y = torch.full((1, 3, SIZE, SIZE), -0.5)
    x = torch.full((1, 3, SIZE, SIZE), 0.25)
    head = torch.zeros(1, 1, SIZE, SIZE)
    head[..., 16:48, 16:48] = 1.0
    out = match_scene(y, x, head)
    np.testing.assert_allclose(out[..., :16, :].numpy(), 0.25, atol=1e-4)  # the scene: the photo's colour
    np.testing.assert_allclose(out[..., 16:48, 16:48].numpy(), -0.5, atol=1e-6)  # the head: untouched


def test_a_donor_on_their_own_wall_is_pasted_without_a_frame():
    """An untrained network draws the key's donor as the donor was photographed, on their own wall. With
    the bank's seed known, the output's top corners take the photo's wall; the eyes stay the donor's."""
    torch.manual_seed(0)
    medical = MedicalNet(MedicalNetConfig(image_size=SIZE, widths=(8, 16, 24, 32))).eval()
    donors = donor_bank(synthetic_donors(6, SIZE), SIZE)
    net = MedSemDeIDNet(DeidNetConfig(image_size=SIZE, widths=(8, 16, 16), medical=asdict(medical.config),
                                      donors=len(donors), bank_seed=0), donors)
    model = MedSemDeID(net)
    photo = synthetic_donors(1, SIZE, seed=100)[0]
    key = derive_model_key("pw")
    out = model.deidentify_crops(photo[None], [key])[0].astype(float)
    choices = net.donor_choices(torch.from_numpy(photo[None]))[0]
    index = int(choices[donor_choice(key, len(choices))])
    donor = donors[index].numpy().astype(float)

    corners = np.zeros((SIZE, SIZE), bool)
    corners[:8, :8] = corners[:8, -8:] = True
    assert donor_subject(index, 0, SIZE)[corners].max() < 0.05  # the donor's wall there, not their hair
    wall_gap = np.abs(donor[corners] - photo[corners]).mean()
    assert wall_gap > 10, wall_gap  # another wall: without the scene's colours, a frame would show
    assert np.abs(out[corners] - photo[corners]).mean() < wall_gap / 4
    eyes = (slice(round(EYE_ROWS[0] * SIZE), round(EYE_ROWS[1] * SIZE)),
            slice(round(EYE_COLUMNS[0] * SIZE), round(EYE_COLUMNS[1] * SIZE)))
    assert np.abs(out[eyes] - donor[eyes]).mean() < 2  # the head keeps its own colours
