"""The face crop MedSem-DeID works on, and the paste back that leaves the rest of the photo alone."""

import cv2
import numpy as np
import pytest
from insightface.utils.face_align import arcface_dst

from medeid.models.deid.align import face_crop, feather_mask, paste_back
from medeid.models.identity import centred_crop


def photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    smooth = cv2.GaussianBlur(rng.uniform(0, 255, (h, w, 3)).astype(np.float32), (0, 0), 3)
    return np.clip(smooth * 2 - 128, 0, 255).astype(np.uint8)


def footprint(where, shape, grow: int = 2) -> np.ndarray:
    """Pixels of the photo the crop covers, grown by `grow` pixels for interpolation."""
    inside = cv2.warpAffine(np.ones((where.size, where.size), np.uint8), cv2.invertAffineTransform(where.matrix),
                            (shape[1], shape[0]), flags=cv2.INTER_NEAREST)
    return cv2.dilate(inside, np.ones((3, 3), np.uint8), iterations=grow).astype(bool)


def test_without_landmarks_the_crop_is_the_central_square_and_only_it_changes():
    image = photo(120, 160)
    crop, where = face_crop(image, 64)
    np.testing.assert_array_equal(crop, centred_crop(image, 64))  # what the recognisers embed
    out = paste_back(image, 255 - crop, where)
    covered = footprint(where, image.shape)
    np.testing.assert_array_equal(out[~covered], image[~covered])  # bit for bit outside the face
    assert not covered[:, :15].any() and not covered[:, -15:].any()  # the side strips are outside
    centre = (slice(40, 80), slice(60, 100))
    assert np.abs(out[centre].astype(int) - (255 - image[centre])).mean() < 8  # the model's pixels inside


def test_with_landmarks_the_crop_is_arcface_aligned_and_pastes_back_seamlessly():
    image = photo(200, 240, seed=1)
    # A face turned 15 degrees, twice the template's size, placed off-centre.
    angle, scale, shift = np.deg2rad(15), 2.0, np.array([50.0, 20.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    landmarks = arcface_dst @ rotation.T * scale + shift
    crop, where = face_crop(image, 128, landmarks)
    mapped = np.c_[landmarks, np.ones(5)] @ where.matrix.T
    np.testing.assert_allclose(mapped, arcface_dst * 128 / 112, atol=1e-6)
    unchanged = paste_back(image, crop, where)
    covered = footprint(where, image.shape)
    np.testing.assert_array_equal(unchanged[~covered], image[~covered])
    error = unchanged[covered].astype(float) - image[covered]
    assert 20 * np.log10(255 / np.sqrt(np.mean(error ** 2))) > 30  # resampling twice, no visible seam
    with pytest.raises(ValueError, match="5"):
        face_crop(image, 128, landmarks[:4])
    with pytest.raises(ValueError, match="128 x 128"):
        paste_back(image, crop[:64], where)


def test_the_feather_is_whole_inside_and_fades_at_the_edge():
    mask = feather_mask(64, 0.1)
    assert mask[32, 32] == 1.0 and mask[0, 32] < 0.2 and mask[0, 0] < mask[0, 32]
    assert np.allclose(mask, mask.T) and np.allclose(mask, mask[::-1, ::-1])


def test_with_a_template_the_landmarks_land_where_the_model_learnt_them():
    """This world's framing is looser than ArcFace's: the same face's crop takes in more of the head."""
    from medeid.synth.render import crop_template

    template = crop_template()
    image = photo(200, 240, seed=2)
    landmarks = arcface_dst * 1.5 + np.array([30.0, 20.0])
    _, own = face_crop(image, 128, landmarks, template)
    mapped = np.c_[landmarks, np.ones(5)] @ own.matrix.T
    assert np.abs(mapped - template * 128).max() < 6, "a similarity fit: close to the template, not on it"
    _, tight = face_crop(image, 128, landmarks)
    # A smaller scale from photo to crop: the crop spans more of the photo.
    assert np.linalg.det(own.matrix[:, :2]) < 0.9 * np.linalg.det(tight.matrix[:, :2])
    assert footprint(own, image.shape).sum() > 1.2 * footprint(tight, image.shape).sum()
