"""MeMa's face distance: the Fréchet formula, and MeMa against a real-vs-real reference."""

import numpy as np
import pytest

from medeid.mema.face_distance import face_distances, frechet_distance


def test_frechet_distance_matches_the_closed_form_of_diagonal_gaussians():
    rng = np.random.default_rng(0)
    a = rng.normal(0.0, 1.0, (20000, 3))
    b = rng.normal([1.0, 0.0, 0.0], [1.0, 2.0, 1.0], (20000, 3))
    # |mu_a - mu_b|^2 + sum(sd_a^2 + sd_b^2 - 2 sd_a sd_b) = 1 + (1 + 4 - 4) = 2
    assert frechet_distance(a, b) == pytest.approx(2.0, abs=0.08)
    assert frechet_distance(a[:10000], a[10000:]) == pytest.approx(0.0, abs=0.01)
    with pytest.raises(ValueError, match="at least two rows"):
        frechet_distance(a[:1], b)


def test_mema_from_the_same_population_scores_about_one_and_a_smudge_far_more():
    rng = np.random.default_rng(1)
    centres = rng.normal(0, 1, (60, 16))  # 60 patients, 6 photos each around their own centre
    patients = np.repeat(np.arange(60).astype(str), 6)
    real = centres[np.repeat(np.arange(60), 6)] + rng.normal(0, 0.3, (360, 16))
    strangers = rng.normal(0, 1, (40, 16))  # new people from the same population
    same = face_distances(strangers + rng.normal(0, 0.3, (40, 16)), real, patients)
    assert same["images"] == 40 and 0.5 < same["ratio"] < 1.6
    # Smudges: alike, and off where the faces lie (a recogniser's features of a face-less image).
    smudges = np.full((40, 16), 1.0) + rng.normal(0, 0.05, (40, 16))
    assert face_distances(smudges, real, patients)["ratio"] > 3
    with pytest.raises(ValueError, match="at least 4 patients"):
        face_distances(strangers, real[:12], patients[:12])
