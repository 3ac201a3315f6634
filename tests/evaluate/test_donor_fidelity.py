"""The donor-fidelity check: a change the model makes in the eye region, and only such a change, shows."""

from dataclasses import asdict

import numpy as np
import pytest
import torch

from medeid.evaluate.donor_fidelity import donor_fidelity, grid, summary
from medeid.models.deid.api import MedSemDeID
from medeid.models.deid.donors import synthetic_donors
from medeid.models.deid.model import DeidNetConfig, MedSemDeIDNet, donor_bank
from medeid.models.medical import MedicalNet, MedicalNetConfig, eye_box

SIZE, DONORS, PATIENTS = 64, 8, 4


@pytest.fixture(scope="module")
def model() -> MedSemDeID:
    """Untrained: its new face is the posed donor, unchanged (the head starts at zero)."""
    torch.manual_seed(0)
    medical = MedicalNet(MedicalNetConfig(image_size=SIZE, widths=(8, 16, 24, 32))).eval()
    config = DeidNetConfig(image_size=SIZE, widths=(8, 16, 16), medical=asdict(medical.config), donors=DONORS,
                           donor_seed=0, donor_choices=4)
    return MedSemDeID(MedSemDeIDNet(config, donor_bank(synthetic_donors(DONORS, SIZE, seed=0), SIZE)))


def test_a_band_painted_across_the_eyes_shows_and_the_donor_alone_does_not(model, monkeypatch):
    plain = donor_fidelity(model, PATIENTS, ranks=(0, 3))
    for rank in (0, 3):
        figures = plain["ranks"][rank]
        assert figures["residual"] == 0.0  # nothing added to the posed donor
        assert figures["crops"].shape == (PATIENTS, 5, SIZE, SIZE, 3)
        np.testing.assert_array_equal(figures["crops"][:, 2], figures["crops"][:, 3])  # posed donor = new face
    forward = model.net.forward
    rows, cols = eye_box(SIZE)

    def lighter_band(*args, **kwargs):  # a model that lightens a band across the eyes
        out = forward(*args, **kwargs)
        out["face"] = out["face"].clone()
        out["face"][:, :, rows, cols] += 0.3
        return out

    monkeypatch.setattr(model.net, "forward", lighter_band)
    banded = donor_fidelity(model, PATIENTS, ranks=(0, 3))
    for rank in (0, 3):
        added = banded["ranks"][rank]["mean_excess"] - plain["ranks"][rank]["mean_excess"]
        assert added == pytest.approx(0.3, abs=0.02)
        assert banded["ranks"][rank]["residual"] > 30  # grey levels
    assert "| 3 |" in summary(banded)
    assert grid(banded, 3, count=2).size == (5 * SIZE, 2 * SIZE)
