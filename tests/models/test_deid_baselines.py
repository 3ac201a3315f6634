"""The baselines de-identify as their names say, and only the eye-kept box keeps the eyes."""

import numpy as np

from medeid.mema.generation import EYE_ROWS
from medeid.models.deid.baselines import BASELINES, eyes_kept_box


def crops(n: int = 3, size: int = 64) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, size, size, 3)).astype(np.uint8)


def test_every_baseline_changes_the_face_and_keeps_the_shape():
    faces = crops()
    for name, baseline in BASELINES.items():
        out = baseline(faces, None)
        assert out.shape == faces.shape and out.dtype == np.uint8, name
        assert np.abs(out.astype(int) - faces).mean() > 20, name
        np.testing.assert_array_equal(out, baseline(faces, None))  # deterministic
    pixelated = BASELINES["pixelate"](faces, None)
    assert len(np.unique(pixelated[0, :8, :8].reshape(-1, 3), axis=0)) == 1  # one colour a block


def test_the_eye_kept_box_keeps_the_eye_rows_and_the_lesion_and_nothing_else():
    faces = crops()
    lesion = np.zeros((3, 64, 64), bool)
    lesion[1, 45:52, 10:18] = True  # below the eye rows
    out = eyes_kept_box(faces, lesion)
    top, end = round(EYE_ROWS[0] * 64), round(EYE_ROWS[1] * 64)
    np.testing.assert_array_equal(out[:, top:end], faces[:, top:end])
    np.testing.assert_array_equal(out[1, 45:52, 10:18], faces[1, 45:52, 10:18])
    assert out[0, 45:52, 10:18].max() == 0 and out[:, :5].max() == 0 and out[:, -5:].max() == 0
