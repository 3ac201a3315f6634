"""A beard in the synthetic world: a darker moustache, chin and jaw, not a tint across the lower face."""

import dataclasses

import numpy as np
import pytest

from medeid.models.deid.donors import bank_donor
from medeid.synth.conditions import Condition
from medeid.synth.render import render

SIZE = 128


@pytest.mark.parametrize("donor", [9, 83, 201, 69])  # bearded men of the default bank: fair to dark skin
def test_a_beard_darkens_the_chin_and_leaves_the_cheeks(donor):
    person = bank_donor(donor, 0)
    assert person.identity.beard > 0
    bearded = render(person.identity, Condition(), person.camera, SIZE).image.astype(float)
    shaved = dataclasses.replace(person.identity, beard=0.0)
    clean = render(shaved, Condition(), person.camera, SIZE).image.astype(float)
    change = (bearded - clean).mean(2)
    assert change.max() <= 1  # stubble is never lighter than the skin, whatever the hair's colour
    rows = lambda a, b: slice(round(a * SIZE), round(b * SIZE))  # noqa: E731
    cheeks = np.abs(change[rows(0.55, 0.62)][:, np.r_[rows(0.25, 0.35), rows(0.65, 0.75)]]).mean()
    chin = change[rows(0.8, 0.86), rows(0.45, 0.55)].mean()
    assert cheeks < 1.5 and chin < -2, (cheeks, chin)
