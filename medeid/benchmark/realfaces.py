"""Face detection on real photographs (`medeid.realfaces`): recall and false detections per face size,
for every detector pack at hand; then the archive anonymizer (CenterFace, the demo's MedSem-DeID) on
them, checked by the held-out real recogniser (`medeid.evaluate.real_recogniser`)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from medeid.realfaces import RealPhoto, face_size

# Face sizes (box's longer side, px): [24, 32), [32, 48), [48, 96), [96, 192), [192, ...).
BUCKETS = (24, 32, 48, 96, 192)
MATCH_IOU = 0.3  # a detection covers a face: the boxes' conventions differ (the LFW crop is eyebrows to chin)
DET_10G = Path("~/.insightface/models/buffalo_l/det_10g.onnx").expanduser()
DEMO_DEID = Path("demo-output/models/deid")  # what `make demo` kept


def bucket_of(size: float) -> str:
    lower = max([b for b in BUCKETS if b <= size], default=0)
    upper = min([b for b in BUCKETS if b > size], default=None)
    return f"{lower}-{upper} px" if upper else f">= {lower} px"


def iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass
class DetectionScore:
    """Faces found per size bucket, and detections that cover no face (on face-free pictures apart)."""

    found: dict[str, int] = field(default_factory=dict)
    faces: dict[str, int] = field(default_factory=dict)
    false_detections: int = 0
    false_on_face_free: int = 0
    missed: list[str] = field(default_factory=list)  # "key: size px"
    seconds: float = 0.0
    photos: int = 0

    def recall(self, min_size: float = 0) -> float:
        keys = [k for k in self.faces if _lower(k) >= min_size]
        total = sum(self.faces[k] for k in keys)
        return sum(self.found.get(k, 0) for k in keys) / total if total else float("nan")


def _lower(bucket: str) -> int:
    return int(bucket.split("-")[0].replace(">= ", "").split()[0])


def match(boxes: list, faces: tuple) -> tuple[list[bool], int]:
    """Greedy one-to-one matching by IoU: (found, per face), number of detections left unmatched."""
    pairs = sorted(((iou(d, f), i, j) for i, f in enumerate(faces) for j, d in enumerate(boxes)), reverse=True)
    found, used = [False] * len(faces), set()
    for overlap, i, j in pairs:
        if overlap >= MATCH_IOU and not found[i] and j not in used:
            found[i] = True
            used.add(j)
    return found, len(boxes) - len(used)


def score_detector(detector, photos: list[RealPhoto]) -> DetectionScore:
    """Run `detector` on every photo as displayed (EXIF applied) and count against the true boxes."""
    from medeid.archive.formats import read_photo

    score = DetectionScore(photos=len(photos))
    for photo in photos:
        rgb = read_photo(photo.data).rgb
        started = time.perf_counter()
        boxes = [face.box.tolist() for face in detector.detect(rgb) if face.score >= detector.det_thresh]
        score.seconds += time.perf_counter() - started
        found, unmatched = match(boxes, photo.faces)
        score.false_detections += unmatched
        score.false_on_face_free += unmatched if not photo.faces else 0
        for box, hit in zip(photo.faces, found):
            bucket = bucket_of(face_size(box))
            score.faces[bucket] = score.faces.get(bucket, 0) + 1
            score.found[bucket] = score.found.get(bucket, 0) + int(hit)
            if not hit:
                score.missed.append(f"{photo.key}: {face_size(box):.0f} px")
    return score


def detectors_at_hand(directory: str, synthetic: bool = True) -> dict:
    """name -> detector: CenterFace always; the demo's synthetic SCRFD (briefly trained, ~40 s) when
    `synthetic`; insightface's det_10g when a user copied it in (`~/.insightface/models/buffalo_l`)."""
    from medeid.models.detector import FaceDetector, load_detector

    found = {"centerface": load_detector("centerface")}
    if synthetic:
        from medeid.benchmark.models import detector_pack

        found["synthetic SCRFD"] = FaceDetector(detector_pack(directory))
    if DET_10G.exists():
        found["insightface det_10g"] = FaceDetector(DET_10G.parent)
    return found


def recogniser_figures(photos: list[RealPhoto], model_uri: str, label: str) -> list[tuple]:
    """Each real face after the archive anonymizer (CenterFace, the MedSem-DeID at `model_uri`) against
    its source under the held-out real recogniser: matched / not matched / no face found there by it,
    and quarantined (not shared). First, as a control, the same faces merely re-encoded (JPEG 75)."""
    from collections import Counter

    from medeid.archive.anonymize import FileAnonymizer
    from medeid.archive.formats import read_photo
    from medeid.archive.manifest import ANONYMIZED
    from medeid.evaluate.real_recogniser import MATCH_DISTANCE, MATCHED, NO_FACE_FOUND, NOT_MATCHED, RealRecogniser
    from medeid.models.deid.api import MedSemDeID
    from medeid.models.detector import load_detector
    from medeid.passwords import Secret
    from medeid.realfaces import encode

    try:
        recogniser = RealRecogniser()
    except ImportError as missing:
        return [("real recogniser", "-", "", f"not installed: {missing}")]
    anonymizer = FileAnonymizer.with_detector(MedSemDeID.from_uri(model_uri), load_detector("centerface"),
                                              Secret("realfaces benchmark"))
    control, after, distances, forced = Counter(), Counter(), [], []
    for photo in (p for p in photos if p.faces):
        source = read_photo(photo.data).rgb
        copy = read_photo(encode(source, "JPEG", quality=75)).rgb
        control.update(c.verdict for c in recogniser.check(source, photo.faces, copy))
        outcome = anonymizer(photo.key, photo.data)
        if outcome.status != ANONYMIZED:
            after["quarantined"] += len(photo.faces)
            continue
        for check in recogniser.check(source, photo.faces, read_photo(outcome.output).rgb, at_known_box=True):
            after[check.verdict] += 1
            distances += [check.distance] if check.distance is not None else []
            forced.append(check.at_known_box)
    faces = sum(after.values())
    impostors = _lfw_impostor_rate(recogniser)
    return [
        ("real recogniser: control, faces re-encoded (JPEG 75)", control[MATCHED], "faces",
         f"matched of {control[MATCHED] + control[NOT_MATCHED]} it found; {control[NO_FACE_FOUND]} of "
         f"{faces} not found by its HOG detector"),
        ("real recogniser: LFW strangers under the rule", impostors, "share",
         f"pairs of the 100 LFW faces (25 px crops, enlarged) at distance < {MATCH_DISTANCE}"),
        (f"real recogniser after the archive job ({label}): matched", after[MATCHED], "faces",
         f"of {faces} real faces (bar: 0)"),
        ("real recogniser after the archive job: not matched", after[NOT_MATCHED], "faces",
         f"min distance of the faces it described: {min(distances):.3f}" if distances else "none described"),
        ("real recogniser after the archive job: no face found", after[NO_FACE_FOUND], "faces",
         "its detector found no face at the source face's place"),
        ("real recogniser after the archive job: quarantined", after["quarantined"], "faces", "not shared"),
        ("real recogniser, output described at the true box", sum(d < MATCH_DISTANCE for d in forced), "faces",
         f"under {MATCH_DISTANCE} of {len(forced)} (an attacker who knows where the face was; min "
         f"{min(forced):.3f}; compare the strangers' rate)" if forced else "none"),
    ]


PHOTO_SIDES = (256, 1000, 2000, 4000)  # real photos come at their cameras' sizes


def size_figures(model_uri: str, sides: tuple[int, ...] = PHOTO_SIDES, repeats: int = 3) -> list[tuple]:
    """The archive anonymizer (CenterFace, the MedSem-DeID at `model_uri`) on the astronaut portrait as
    JPEG at each side: seconds a file (median of `repeats`) and the peak resident memory above the idle
    process while it ran (sampled every 2 ms), with a check that the output keeps the photo's size."""
    import cv2
    import numpy as np

    from medeid.archive.anonymize import FileAnonymizer
    from medeid.archive.formats import read_photo
    from medeid.archive.manifest import ANONYMIZED
    from medeid.benchmark.common import peak_rss
    from medeid.models.deid.api import MedSemDeID
    from medeid.models.detector import load_detector
    from medeid.passwords import Secret
    from medeid.realfaces import encode, portrait

    anonymizer = FileAnonymizer.with_detector(MedSemDeID.from_uri(model_uri), load_detector("centerface"),
                                              Secret("realfaces benchmark"))
    table = []
    for side in sides:
        data = encode(cv2.resize(portrait("astronaut"), (side, side), interpolation=cv2.INTER_CUBIC), "JPEG")
        anonymizer("warm-up.jpg", data)
        outcomes = []
        runs = [peak_rss(lambda: outcomes.append(anonymizer(f"size/astronaut-{side}.jpg", data)))
                for _ in range(repeats)]
        seconds, peaks = zip(*runs)
        outcome = outcomes[-1]
        shape = read_photo(outcome.output).rgb.shape[:2] if outcome.status == ANONYMIZED else None
        table += [(f"real photo {side} x {side} px: anonymized", 1 / float(np.median(seconds)), "files/s",
                   f"{outcome.status}, {outcome.faces} face(s); output {shape[1]} x {shape[0]} px"
                   if shape else outcome.status),
                  (f"real photo {side} x {side} px: peak memory", max(peaks), "MiB",
                   f"resident, above the idle process; the file is {len(data) / 2**20:.1f} MiB of JPEG")]
    return table


def _lfw_impostor_rate(recogniser) -> float:
    """Share of pairs of LFW faces (different photos, mostly different people) the rule calls one person."""
    import numpy as np
    from PIL import Image

    from medeid.evaluate.real_recogniser import MATCH_DISTANCE
    from medeid.realfaces import lfw_faces

    codes = np.stack([recogniser.describe(np.asarray(Image.fromarray(f).resize((128, 128), Image.LANCZOS)),
                                          (0, 0, 128, 128)) for f in lfw_faces(100)])
    distances = np.linalg.norm(codes[:, None] - codes[None], axis=-1)[np.triu_indices(len(codes), 1)]
    return float((distances < MATCH_DISTANCE).mean())


def suite_realfaces(lfw_count: int = 100, synthetic: bool = True, deid_model: str | None = None) -> list[tuple]:
    """Recall per face size and false detections of every detector at hand on the real check set; then
    the archive anonymizer on it under the held-out real recogniser, with `deid_model` (default: the
    demo's, `demo-output/models/deid`, else an untrained one of the demo's shape)."""
    import tempfile

    from medeid.realfaces import real_photos

    photos = real_photos(lfw_count)
    faces = sum(len(p.faces) for p in photos)
    face_free = sum(not p.faces for p in photos)
    table = [("check set", len(photos), "photos", f"{faces} real faces; {face_free} face-free pictures")]
    with tempfile.TemporaryDirectory() as directory:
        for name, detector in detectors_at_hand(directory, synthetic).items():
            score = score_detector(detector, photos)
            for bucket in sorted(score.faces, key=_lower):
                table.append((f"{name}: recall, faces {bucket}", score.found.get(bucket, 0) / score.faces[bucket],
                              "share", f"{score.found.get(bucket, 0)} of {score.faces[bucket]}"))
            table += [(f"{name}: recall, faces >= 48 px", score.recall(48), "share", "bar: >= 0.98 (centerface)"),
                      (f"{name}: false detections", score.false_detections, "boxes",
                       f"{score.false_on_face_free} on the {face_free} face-free pictures (bar: 0)"),
                      (f"{name}: detection time", 1000 * score.seconds / len(photos), "ms/photo",
                       f"threshold {detector.det_thresh}; photos 256-640 px")]
            shown = score.missed[:10] + ([f"... {len(score.missed) - 10} more"] if len(score.missed) > 10 else [])
            print(f"[realfaces] {name} missed: {shown}", flush=True)
        if deid_model is None and DEMO_DEID.exists():
            deid_model = str(DEMO_DEID)
        if deid_model is None:
            from medeid.benchmark.models import deid_model as untrained

            label = "untrained MedSem-DeID"
            deid_model = untrained(directory, 128)
        else:
            label = f"MedSem-DeID {deid_model}"
        table += size_figures(deid_model)
        table += recogniser_figures(photos, deid_model, label)
    return table
