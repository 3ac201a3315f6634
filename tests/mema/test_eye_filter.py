"""The identity filter's eye-band check: a drawn face whose eye band copies a real photo's, or that a
periocular recogniser of the filter's own matches to a real patient, is rejected before release."""

import dataclasses

import numpy as np
import pytest

from medeid.mema.attack_audit import read_real_bands
from medeid.mema.eye_filter import FILTER_FAR, FILTER_SEED, EyeCheck, generator_resolution, prepare_eye_check
from medeid.models.generator import TinyGeneratorConfig, build_tiny_pipeline
from medeid.pipelines.mema_filters import reject_eye_matches
from tests.mema.eye_world import EPOCHS, NEWCOMERS, PATIENTS, PHOTOS, SIZE


@pytest.fixture(scope="module")
def check(world, ray_session) -> EyeCheck:
    return prepare_eye_check(world["archive"], SIZE, epochs=EPOCHS, log=None)


def batch_of(images: np.ndarray) -> dict:
    n = len(images)
    return {"sample_id": np.array([f"s{i}" for i in range(n)], dtype=object), "image": images,
            "stage": np.array([""] * n, dtype=object), "reason": np.array([""] * n, dtype=object),
            "figure": np.full(n, np.nan, np.float32), "threshold": np.full(n, np.nan, np.float32)}


def test_copies_and_periocular_matches_are_rejected_and_strangers_pass(world, check):
    batch = batch_of(world["released"])  # the first has photo 9's eye band pasted in; the others are strangers
    batch["stage"][3], batch["reason"][3] = "quality", "blurred"  # an earlier stage's verdict stays
    reject_eye_matches(batch, check)
    stages, reasons = list(batch["stage"]), list(batch["reason"])
    assert stages[0] == "identity" and reasons[0].startswith("eye band copies a real photo's")
    assert batch["figure"][0] < batch["threshold"][0] == check.copy_distance
    assert (stages[3], reasons[3]) == ("quality", "blurred")
    assert stages[1:3] + stages[4:] == [""] * (NEWCOMERS - 2), (reasons, check.threshold, check.figures)
    # Without the pixel check, the filter's own periocular recogniser still finds the pasted eyes.
    batch = batch_of(world["released"])
    reject_eye_matches(batch, dataclasses.replace(check, copy_distance=0.0))
    assert batch["stage"][0] == "identity" and batch["reason"][0].startswith("eye band too close to a real patient")
    assert batch["figure"][0] >= batch["threshold"][0] == pytest.approx(check.threshold)
    assert list(batch["stage"][1:]) == [""] * (NEWCOMERS - 1), (list(batch["reason"]), check.threshold)
    real = read_real_bands(world["archive"], SIZE)
    assert len(real.ids) == len(check.gallery) == len(check.pixels) == PATIENTS * PHOTOS


def test_the_filters_recogniser_is_its_own_and_stricter_than_the_audit(world, check):
    auditor = world["auditor"]  # the audit's: seed 0 at FAR 1e-3
    assert check.figures["far"] == FILTER_FAR > auditor["far"] and FILTER_SEED != 0
    assert check.figures["top1_others"] >= 20 * check.figures["chance"]  # an attacker, not noise (chance 1/150)
    # Copies: twice the audit's bar, or where different patients' real bands come that close, never under it.
    assert check.copy_distance == max(auditor["copy_mad"], min(2 * auditor["copy_mad"], check.figures["strangers_mad"]))
    assert check.copy_distance >= auditor["copy_mad"], check.figures
    # The weights travel and come back as the same network.
    bands = world["released"]
    np.testing.assert_allclose(check.recogniser().embed(bands), check.recogniser().embed(bands), atol=1e-6)


def test_generator_resolution_is_what_the_pipeline_draws(tmp_path):
    build_tiny_pipeline(TinyGeneratorConfig(resolution=32)).save_pretrained(tmp_path)
    assert generator_resolution(str(tmp_path)) == 32
    assert generator_resolution("medeid:generator_base") == 128
