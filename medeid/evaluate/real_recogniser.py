"""A real face recogniser the project never trains against, to check anonymized real photos with.

dlib's ResNet face descriptor (`dlib_face_recognition_resnet_model_v1.dat`, 128-d) with its 5-point
landmarks and HOG face detector, from the `face-recognition-models` package, run by `dlib-bin`'s
prebuilt dlib: the pipeline `face_recognition` publishes (HOG upsampled once, 5-point "small"
landmarks, one jitter), and its rule: Euclidean distance < 0.6 is the same person. Both packages are
test extras, so this module imports dlib only when a recogniser is made.

    recogniser = RealRecogniser()
    checks = recogniser.check(source_rgb, true_boxes, output_rgb)   # one FaceCheck per source face
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MATCH_DISTANCE = 0.6  # dlib's published rule: below it, the same person
UPSAMPLE = 1  # face_recognition's default: HOG then finds faces down to ~40 px
SAME_FACE_IOU = 0.3  # a recogniser's box covers a true box (their conventions differ)
MATCHED, NOT_MATCHED, NO_FACE_FOUND = "matched", "not matched", "no face found"


def models_folder() -> Path:
    """The `.dat` files of `face-recognition-models`, found without importing the package: its
    `__init__` imports `pkg_resources`, which recent setuptools no longer ship."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the real recogniser needs the test extras: pip install -e '.[test]'")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


@dataclass(frozen=True)
class FaceCheck:
    """One source face against the same place in the output."""

    box: tuple  # the true box
    verdict: str  # matched | not matched | no face found (the recogniser found none there in the output)
    distance: float | None  # source vs the output face the recogniser found; None when it found none
    found_in_source: bool  # the recogniser's own detector found the face in the source too
    at_known_box: float | None = None  # source vs the output described at the true box (asked for)


class RealRecogniser:
    def __init__(self):
        import dlib  # a test extra: dlib-bin

        folder = models_folder()
        self._detector = dlib.get_frontal_face_detector()
        self._landmarks = dlib.shape_predictor(str(folder / "shape_predictor_5_face_landmarks.dat"))
        self._net = dlib.face_recognition_model_v1(str(folder / "dlib_face_recognition_resnet_model_v1.dat"))
        self._rectangle = dlib.rectangle

    def find(self, rgb: np.ndarray) -> list[tuple]:
        """Face boxes (x1, y1, x2, y2) by the recogniser's own detector."""
        return [(r.left(), r.top(), r.right(), r.bottom()) for r in self._detector(np.ascontiguousarray(rgb), UPSAMPLE)]

    def describe(self, rgb: np.ndarray, box) -> np.ndarray:
        """The 128-d descriptor of the face in `box`."""
        rgb = np.ascontiguousarray(rgb)
        shape = self._landmarks(rgb, self._rectangle(*[int(round(v)) for v in box]))
        return np.asarray(self._net.compute_face_descriptor(rgb, shape), dtype=np.float32)

    @staticmethod
    def same_person(a: np.ndarray, b: np.ndarray) -> bool:
        return float(np.linalg.norm(a - b)) < MATCH_DISTANCE

    def check(self, source: np.ndarray, boxes, output: np.ndarray, at_known_box: bool = False) -> list[FaceCheck]:
        """Each true face of `source` against what the recogniser finds at its place in `output`. The
        source face is described at the recogniser's own box when it finds it, else at the true box.
        `at_known_box` also describes the output at the true box, as an attacker who knows where to look."""
        in_source, in_output = self.find(source), self.find(output)
        checks = []
        for box in boxes:
            own = _best(in_source, box)
            reference = self.describe(source, own or box)
            there = _best(in_output, box)
            distance = float(np.linalg.norm(reference - self.describe(output, there))) if there else None
            verdict = NO_FACE_FOUND if distance is None else MATCHED if distance < MATCH_DISTANCE else NOT_MATCHED
            forced = float(np.linalg.norm(reference - self.describe(output, box))) if at_known_box else None
            checks.append(FaceCheck(tuple(box), verdict, distance, own is not None, forced))
        return checks


def _best(found: list[tuple], box) -> tuple | None:
    """The found box that covers `box` best, if any covers it."""
    scored = [(iou(f, box), f) for f in found]
    overlap, best = max(scored, default=(0.0, None))
    return best if overlap >= SAME_FACE_IOU else None
