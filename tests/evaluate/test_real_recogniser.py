"""The held-out real recogniser (dlib's ResNet, a test extra): it knows a real face again and tells
LFW people apart, it catches a face left recognisable, and no real face the archive anonymizer
replaced still matches its source under its rule (distance < 0.6)."""

import cv2
import numpy as np
import pytest
from PIL import Image

from medeid.archive.anonymize import FileAnonymizer
from medeid.archive.formats import read_photo
from medeid.archive.manifest import ANONYMIZED, QUARANTINED
from medeid.evaluate.real_recogniser import MATCH_DISTANCE, MATCHED, NOT_MATCHED, RealRecogniser
from medeid.models.detector import load_detector
from medeid.passwords import Secret
from medeid.realfaces import PORTRAITS, encode, lfw_faces, portrait, real_photos
from tests.models.test_deid_api import model  # noqa: F401  (the module's small MedSem-DeID)

# A slice with every kind of real face the anonymizer replaces (several sizes, EXIF, grey, low JPEG,
# cut off, LFW alone and in a group): a few seconds of the recogniser.
SLICE = ("portrait/astronaut.png", "scale/astronaut-064.jpg", "exif/astronaut-6.jpg", "grey/astronaut.png",
         "edge/astronaut-left.jpg", "lfw/single-000.png", "group/group-00.jpg")


@pytest.fixture(scope="module")
def recogniser():
    return RealRecogniser()


@pytest.fixture(scope="module")
def photos():
    every = {p.key: p for p in real_photos(lfw_count=6, portraits=("astronaut",))}
    return [every[key] for key in SLICE]


def test_it_knows_a_real_face_again_and_tells_different_people_apart(recogniser):
    astronaut, box = portrait("astronaut"), PORTRAITS["astronaut"]
    again = read_photo(encode(astronaut, "JPEG", quality=20)).rgb  # the same photo, re-encoded badly
    [check] = recogniser.check(astronaut, [box], again)
    assert check.found_in_source and check.verdict == MATCHED and check.distance < 0.3, check
    hopper = recogniser.describe(portrait("grace_hopper"), PORTRAITS["grace_hopper"])
    assert not recogniser.same_person(recogniser.describe(astronaut, box), hopper)
    # LFW's 25 px crops, enlarged: a few strangers fall under 0.6 (the rule is dlib's for sharper faces).
    faces = [np.asarray(Image.fromarray(f).resize((128, 128), Image.LANCZOS)) for f in lfw_faces(12)]
    codes = np.stack([recogniser.describe(f, (0, 0, 128, 128)) for f in faces])
    distances = np.linalg.norm(codes[:, None] - codes[None], axis=-1)[np.triu_indices(len(faces), 1)]
    assert (distances < MATCH_DISTANCE).mean() < 0.25, np.sort(distances)[:10]


def test_a_face_left_recognisable_is_caught(recogniser, photos):
    """The check can fail: a lightly blurred face still matches its source."""
    p = next(p for p in photos if p.key == "scale/astronaut-064.jpg")
    source = read_photo(p.data).rgb
    blurred = cv2.GaussianBlur(source, (0, 0), 1.5)
    [check] = recogniser.check(source, p.faces, blurred)
    assert check.verdict == MATCHED, check


def test_no_anonymized_real_face_matches_its_source(recogniser, photos, model):  # noqa: F811
    anonymizer = FileAnonymizer.with_detector(model, load_detector("centerface"), Secret("real photos"))
    verdicts = []
    for p in photos:
        outcome = anonymizer(p.key, p.data)
        if outcome.status == QUARANTINED:  # not shared: nothing to recognise
            verdicts += ["quarantined"] * len(p.faces)
            continue
        assert outcome.status == ANONYMIZED, (p.key, outcome.reason)
        checks = recogniser.check(read_photo(p.data).rgb, p.faces, read_photo(outcome.output).rgb)
        assert all(c.verdict != MATCHED for c in checks), (p.key, checks)
        verdicts += [c.verdict for c in checks]
    # Not vacuous: the recogniser found and described replaced faces, and found the sources.
    assert verdicts.count(NOT_MATCHED) >= 3, verdicts
