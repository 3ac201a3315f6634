"""The archive job on real photographs, checked by a real recogniser it never trains against.

    truth = write_check_set(photos_uri, settings)                  # medeid.realfaces' photos + their boxes
    # ... jobs/anonymize_archive.py --input photos_uri --output shared_uri --detector centerface ...
    check = check_shared(photos_uri, shared_uri, settings)          # each real face against its output
    write_check_report(check, output_uri, settings)                 # report.md + faces.png

The true face boxes go to `<photos>-truth.json`, beside the photos rather than among them, so the archive
job lists only photos. Every face of the check set ends as one of: matched (the recogniser still calls
the output's face the source's person: a privacy failure), not matched, no face found there by the
recogniser's own detector, or its photo not shared (quarantined or no face found by the job). The
source photos are real people's: the report belongs with the hospital's, never in the shared copy.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from medeid import storage

TRUTH_SUFFIX = "-truth.json"
REPORT_FILE, FACES_FILE = "report.md", "faces.png"
NOT_SHARED = "not shared"
CROP = 112  # side of a face crop in the picture


def write_check_set(photos_uri: str, settings: storage.S3Settings | None = None, lfw_count: int = 100,
                    portraits: tuple[str, ...] | None = None) -> dict:
    """Write the real check set's files under `photos_uri` and their boxes to `<photos_uri>-truth.json`
    (`lfw_count` and `portraits` as `real_photos` takes them: the defaults are the whole set)."""
    from medeid.realfaces import PORTRAITS, real_photos

    truth = {}
    for photo in real_photos(lfw_count, portraits=portraits or tuple(PORTRAITS)):
        storage.write_bytes(storage.join(photos_uri, photo.key), photo.data, settings)
        truth[photo.key] = {"faces": [list(box) for box in photo.faces], "kind": photo.kind}
    storage.write_bytes(photos_uri.rstrip("/") + TRUTH_SUFFIX, json.dumps(truth, indent=1).encode(), settings)
    return truth


@dataclass
class FaceResult:
    key: str
    box: tuple
    verdict: str  # matched | not matched | no face found | not shared
    distance: float | None = None  # source vs the output face the recogniser found
    at_known_box: float | None = None  # source vs the output described at the true box


@dataclass
class SharedCheck:
    photos: int
    statuses: Counter  # the archive job's status per photo of the check set
    faces: list[FaceResult] = field(default_factory=list)
    crops: list[tuple[np.ndarray, np.ndarray, str]] = field(default_factory=list)  # (source, output, label)

    def verdicts(self) -> Counter:
        return Counter(face.verdict for face in self.faces)


def check_shared(photos_uri: str, shared_uri: str, settings: storage.S3Settings | None = None,
                 picture_faces: int = 12) -> SharedCheck:
    """Each true face of the check set under `photos_uri` against the archive job's output at `shared_uri`
    (its manifest at `<shared_uri>-manifest`), under the held-out real recogniser (dlib, test extras)."""
    from medeid.archive.formats import read_photo
    from medeid.archive.manifest import ANONYMIZED, latest, read_manifest
    from medeid.evaluate.real_recogniser import MATCHED, RealRecogniser
    from medeid.pipelines.anonymize import MANIFEST_SUFFIX

    truth = json.loads(storage.read_bytes(photos_uri.rstrip("/") + TRUTH_SUFFIX, settings))
    rows = {r["input_key"]: r for r in latest(read_manifest(shared_uri.rstrip("/") + MANIFEST_SUFFIX,
                                                            settings)).to_pylist()}
    if not rows:
        raise FileNotFoundError(f"no archive job has run over {photos_uri}: "
                                f"{shared_uri}{MANIFEST_SUFFIX} holds no rows")
    recogniser = RealRecogniser()
    check = SharedCheck(len(truth), Counter(rows[k]["status"] if k in rows else "missing" for k in truth))
    shown: list[tuple[float, np.ndarray, np.ndarray, str]] = []
    for key, entry in sorted(truth.items()):
        boxes, row = [tuple(b) for b in entry["faces"]], rows.get(key)
        if not boxes:
            continue
        if row is None or row["status"] != ANONYMIZED:
            check.faces += [FaceResult(key, box, NOT_SHARED) for box in boxes]
            continue
        source = read_photo(storage.read_bytes(storage.join(photos_uri, key), settings)).rgb
        output = read_photo(storage.read_bytes(storage.join(shared_uri, row["output_key"]), settings)).rgb
        for face in recogniser.check(source, boxes, output, at_known_box=True):
            result = FaceResult(key, face.box, face.verdict, face.distance, face.at_known_box)
            check.faces.append(result)
            # The picture: matched faces first, then the closest at the true box.
            rank = -1.0 if face.verdict == MATCHED else face.at_known_box
            label = f"{face.verdict}" + (f" {face.distance:.3f}" if face.distance is not None else "")
            shown.append((rank, crop(source, face.box), crop(output, face.box), f"{key.split('/')[-1]}: {label}"))
    shown.sort(key=lambda item: item[0])
    check.crops = [(s, o, label) for _, s, o, label in shown[:picture_faces]]
    return check


def crop(rgb: np.ndarray, box, margin: float = 0.3) -> np.ndarray:
    """The face in `box` with a margin around it, as a CROP-px square."""
    x1, y1, x2, y2 = box
    half = max(x2 - x1, y2 - y1) * (0.5 + margin)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    region = (int(cx - half), int(cy - half), int(cx + half), int(cy + half))
    return np.asarray(Image.fromarray(rgb).crop(region).resize((CROP, CROP), Image.LANCZOS))


def write_check_report(check: SharedCheck, output_uri: str, settings: storage.S3Settings | None = None) -> str:
    """`report.md` and `faces.png` under `output_uri`; returns the report's URI."""
    from medeid.evaluate.real_recogniser import MATCH_DISTANCE, MATCHED, NO_FACE_FOUND, NOT_MATCHED
    from medeid.synth.contact_sheet import image_grid

    verdicts, faces = check.verdicts(), len(check.faces)
    forced = [f.at_known_box for f in check.faces if f.at_known_box is not None]
    described = [f.distance for f in check.faces if f.distance is not None]
    lines = ["# The archive job on real photographs", "",
             f"{check.photos} photos of `medeid/realfaces.py`'s check set, {faces} real faces, through the archive "
             "job with the real detector (CenterFace); each face against its output under dlib's ResNet "
             f"descriptor (never trained against; its rule: distance < {MATCH_DISTANCE} is the same person).", "",
             "| the archive job | photos |", "| --- | ---: |",
             *[f"| {status} | {n} |" for status, n in sorted(check.statuses.items())], "",
             "| real faces | faces |", "| --- | ---: |",
             f"| **matched: still their source's person (bar: 0)** | **{verdicts[MATCHED]}** "
             f"({'PASS' if verdicts[MATCHED] == 0 else 'FAIL'}) |",
             f"| not matched | {verdicts[NOT_MATCHED]} |",
             f"| no face found there by the recogniser | {verdicts[NO_FACE_FOUND]} |",
             f"| photo not shared (quarantined or no face found by the job) | {verdicts[NOT_SHARED]} |",
             f"| described at the true box, under {MATCH_DISTANCE} | {sum(d < MATCH_DISTANCE for d in forced)} "
             f"of {len(forced)} |", ""]
    if described:
        lines += [f"Distances of the faces it found in the outputs: min {min(described):.3f}, median "
                  f"{float(np.median(described)):.3f}.", ""]
    if check.crops:
        grid = image_grid([[s, o] for s, o, _ in check.crops], [label for *_, label in check.crops],
                          ["real face", "shared copy"])
        buffer = io.BytesIO()
        grid.save(buffer, format="PNG")
        storage.write_bytes(storage.join(output_uri, FACES_FILE), buffer.getvalue(), settings)
        lines += ["## The faces closest to their source", "",
                  "Matched faces first, then by distance at the true box (an attacker who knows where the face "
                  "was). The demo's MedSem-DeID learnt on the synthetic world, so its new face is a cartoon on "
                  "a real head: what must hold is that the person is not recognised.", "",
                  f"![real faces and their shared copies]({FACES_FILE})", ""]
    uri = storage.join(output_uri, REPORT_FILE)
    storage.write_bytes(uri, "\n".join(lines).encode(), settings)
    return uri
