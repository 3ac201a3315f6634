"""The real-photo check set on a slice: built as described, CenterFace's recall and false detections
on it, and fail-closed for small faces through the archive anonymizer."""

import io

import numpy as np
import pytest
from PIL import Image

from medeid.archive.anonymize import FileAnonymizer
from medeid.archive.formats import read_photo
from medeid.archive.manifest import ANONYMIZED, QUARANTINED
from medeid.benchmark.realfaces import score_detector
from medeid.models.detector import load_detector
from medeid.passwords import Secret
from medeid.realfaces import face_size, portrait, real_photos
from tests.models.test_deid_api import model  # noqa: F401  (the module's small MedSem-DeID)

KINDS = {"portrait", "scale", "group", "exif", "grey", "low_jpeg", "edge", "face_free"}


@pytest.fixture(scope="module")
def photos():
    return real_photos(lfw_count=6, portraits=("astronaut",))


@pytest.fixture(scope="module")
def centerface():
    return load_detector("centerface")


def test_the_slice_holds_every_kind_with_boxes_from_how_it_was_made(photos):
    assert {p.kind for p in photos} == KINDS and len({p.key for p in photos}) == len(photos)
    sizes = sorted(face_size(box) for p in photos for box in p.faces)
    assert sizes[0] <= 24 and sizes[-1] >= 256  # 24 px to most of the frame
    for p in photos:
        rgb = read_photo(p.data).rgb
        assert all(0 <= x1 < x2 <= rgb.shape[1] and 0 <= y1 < y2 <= rgb.shape[0] for x1, y1, x2, y2 in p.faces), p.key
        assert bool(p.faces) == (p.kind != "face_free"), p.key
    turned = next(p for p in photos if p.kind == "exif" and p.key.endswith("-6.jpg"))
    with Image.open(io.BytesIO(turned.data)) as stored:
        assert stored.getexif()[0x0112] == 6
    shown = read_photo(turned.data).rgb.astype(float)
    assert np.abs(shown - portrait("astronaut")).mean() < 4  # the tag turns it back upright (JPEG noise only)
    grey = read_photo(next(p for p in photos if p.kind == "grey").data)
    assert grey.mode == "L"
    edge = next(p for p in photos if p.key.endswith("-left.jpg")).faces[0]
    assert edge[0] == 0 and face_size(edge) >= 100  # cut off at the frame's left edge


def test_centerface_finds_the_real_faces_of_48_px_and_more_and_nothing_on_face_free_pictures(photos, centerface):
    score = score_detector(centerface, photos)
    assert score.recall(48) >= 0.98, score.missed
    assert score.false_on_face_free == 0 and score.false_detections == 0, score
    assert sum(score.faces.values()) == sum(len(p.faces) for p in photos)


def test_faces_under_48_px_are_replaced_or_their_photo_quarantined(photos, centerface, model):  # noqa: F811
    anonymizer = FileAnonymizer.with_detector(model, centerface, Secret("real photos"))
    small = [p for p in photos if p.faces and min(face_size(b) for b in p.faces) < 48]
    assert len(small) >= 3
    for p in small:
        outcome = anonymizer(p.key, p.data)
        if outcome.status == QUARANTINED:
            continue
        assert outcome.status == ANONYMIZED
        before, after = read_photo(p.data).rgb.astype(float), read_photo(outcome.output).rgb.astype(float)
        for x1, y1, x2, y2 in p.faces:  # the middle of every face changed
            cx, cy, r = (x1 + x2) / 2, (y1 + y2) / 2, max(2, (x2 - x1) / 5)
            window = np.s_[int(cy - r):int(cy + r), int(cx - r):int(cx + r)]
            assert np.abs(after[window] - before[window]).mean() > 8, (p.key, (x1, y1, x2, y2))


def test_a_4000_px_photo_is_detected_at_the_working_size_and_its_face_replaced_at_full_resolution(centerface,
                                                                                                  model):  # noqa: F811
    import cv2

    from medeid.realfaces import PORTRAITS, encode

    side = 4000
    big = cv2.resize(portrait("astronaut"), (side, side), interpolation=cv2.INTER_CUBIC)
    anonymizer = FileAnonymizer.with_detector(model, centerface, Secret("real photos"))
    outcome = anonymizer("large/astronaut-4000.jpg", encode(big, "JPEG", quality=90))
    assert outcome.status == ANONYMIZED and outcome.faces == 1
    out = read_photo(outcome.output).rgb
    assert out.shape == big.shape  # not a downscaled copy
    x1, y1, x2, y2 = (np.array(PORTRAITS["astronaut"]) * side / 512).astype(int)
    face = np.abs(out[y1:y2, x1:x2].astype(float) - big[y1:y2, x1:x2]).mean()
    rest = np.abs(out[3200:].astype(float) - big[3200:]).mean()
    assert face > 8 and rest < 2, (face, rest)


def test_matching_is_one_to_one_and_sizes_fall_in_their_buckets():
    from medeid.benchmark.realfaces import bucket_of, match

    faces = ((0, 0, 40, 40), (100, 100, 160, 160))
    found, false = match([[2, 2, 42, 42], [0, 0, 38, 40], [300, 300, 340, 340]], faces)
    assert found == [True, False] and false == 2  # a second box on the same face is a false one
    assert match([], faces) == ([False, False], 0) and match([[0, 0, 9, 9]], ()) == ([], 1)
    assert [bucket_of(s) for s in (24, 47.9, 48, 191, 400)] == ["24-32 px", "32-48 px", "48-96 px", "96-192 px",
                                                                ">= 192 px"]
