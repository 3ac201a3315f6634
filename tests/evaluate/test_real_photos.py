"""The demo's real-photographs check: the check set written as an archive with its true boxes beside it,
and each real face of the archive job's output checked against its source through the job's manifest.
The check catches a face left recognisable, counts a photo the job did not share as not shared, and
reports FAIL with a picture of the faces closest to their source."""

import json

import cv2
import pytest

from medeid.archive.formats import read_photo
from medeid.archive.manifest import ANONYMIZED, QUARANTINED, Entry, write_part
from medeid.evaluate import real_photos
from medeid.evaluate.real_recogniser import MATCHED
from medeid.realfaces import encode

LEAKED, HIDDEN, QUARANTINED_KEY = "scale/astronaut-128.jpg", "scale/astronaut-192.jpg", "portrait/astronaut.png"


@pytest.fixture(scope="module")
def check_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    photos, shared = root / "real-photos", root / "real-photos-anonymized"
    truth = real_photos.write_check_set(str(photos), lfw_count=2, portraits=("astronaut",))
    # A stand-in for the archive job's output: one face only blurred (a leak), one painted over, one
    # photo quarantined; the rest never processed.
    entries = [Entry("r1", QUARANTINED_KEY, 1, QUARANTINED, reason="no face found")]
    for key, change in ((LEAKED, lambda rgb: cv2.GaussianBlur(rgb, (0, 0), 1.5)), (HIDDEN, hide_faces(truth[HIDDEN]))):
        output = change(read_photo((photos / key).read_bytes()).rgb)
        (shared / key).parent.mkdir(parents=True, exist_ok=True)
        (shared / key).write_bytes(encode(output, "JPEG"))
        entries.append(Entry("r1", key, 1, ANONYMIZED, output_key=key, faces=1))
    write_part(entries, f"{shared}-manifest", "r1", "0")
    return photos, shared, truth


def hide_faces(entry):
    def hide(rgb):
        rgb = rgb.copy()
        for x1, y1, x2, y2 in entry["faces"]:
            rgb[int(y1):int(y2), int(x1):int(x2)] = 128
        return rgb
    return hide


def test_the_check_set_is_written_as_an_archive_with_its_boxes_beside_it(check_set):
    photos, _, truth = check_set
    on_disk = {str(p.relative_to(photos)) for p in photos.rglob("*") if p.is_file()}
    assert on_disk == set(truth), "only photos under the prefix: the boxes live beside it"
    assert json.loads((photos.parent / f"real-photos{real_photos.TRUTH_SUFFIX}").read_text()) == truth
    assert {e["kind"] for e in truth.values()} >= {"portrait", "scale", "exif", "face_free", "group"}
    assert truth[LEAKED]["faces"] and not truth["face_free/coffee.png"]["faces"]


def test_a_recognisable_face_is_caught_and_unshared_photos_are_counted(check_set, tmp_path):
    photos, shared, truth = check_set
    check = real_photos.check_shared(str(photos), str(shared))
    by_key = {}
    for face in check.faces:
        by_key.setdefault(face.key, []).append(face.verdict)
    assert by_key[LEAKED] == [MATCHED]
    assert by_key[HIDDEN] != [MATCHED] and by_key[QUARANTINED_KEY] == [real_photos.NOT_SHARED]
    assert len(check.faces) == sum(len(e["faces"]) for e in truth.values())
    assert check.statuses[ANONYMIZED] == 2 and check.statuses["missing"] == len(truth) - 3
    uri = real_photos.write_check_report(check, str(tmp_path))
    report = open(uri).read()
    assert "**1** (FAIL)" in report and (tmp_path / real_photos.FACES_FILE).stat().st_size > 0
    assert check.crops[0][2].startswith("astronaut-128.jpg: matched"), "matched faces first in the picture"
    assert real_photos.REPORT_FILE in uri


def test_the_demo_jobs_write_the_check_set_and_refuse_to_check_an_archive_no_job_ran_over(tmp_path):
    import subprocess
    import sys

    photos = tmp_path / "real-photos"
    made = subprocess.run([sys.executable, "jobs/make_real_photos.py", "--output", str(photos), "--lfw-faces", "2"],
                          capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    truth = json.loads((tmp_path / f"real-photos{real_photos.TRUTH_SUFFIX}").read_text())
    assert f"{len(truth)} photos" in made.stdout and (photos / "portrait" / "grace_hopper.png").exists()
    checked = subprocess.run([sys.executable, "jobs/check_real_photos.py", "--photos", str(photos), "--shared",
                              str(tmp_path / "nothing"), "--output", str(tmp_path / "check")],
                             capture_output=True, text=True, timeout=120)
    assert checked.returncode != 0 and "no archive job has run over" in checked.stderr
