"""One file through the anonymizer: every format out alike, faces replaced and recoverable, and
fail-closed quarantine. The detector here is a fixed answer, so the decisions are what is tested;
the job's tests use the trained detector."""

import io
from dataclasses import dataclass

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import generate_uid

from medeid.archive import carrier
from medeid.archive.anonymize import Decoded, FileAnonymizer
from medeid.archive.manifest import ANONYMIZED, NO_FACE, QUARANTINED
from medeid.archive.recovery import EMBEDDED, NONE, SEPARATE
from medeid.models.deid.api import NO_RECOVERY_DATA, RECOVERED, WRONG_PASSWORD
from medeid.passwords import Secret
from medeid.synth.hospital_files import PHI, dicom_photo
from tests.archive.seal_checks import seal_traces
from tests.models.test_deid_align import photo
from tests.models.test_deid_api import model, psnr  # noqa: F401  (the module's small MedSem-DeID)

SECRET = Secret("archive secret")
LANDMARKS = np.array([[30.0, 40.0], [66.0, 40.0], [48.0, 58.0], [34.0, 76.0], [62.0, 76.0]])


@dataclass
class Found:
    score: float
    landmarks: np.ndarray


class FixedFaces:
    def __init__(self, *scores: float):
        self.scores = scores

    def detect(self, image):
        return [Found(s, LANDMARKS) for s in self.scores]


def encoded(array: np.ndarray, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt, mode", [("JPEG", "RGB"), ("PNG", "RGB"), ("PNG", "L"), ("TIFF", "RGB"), ("BMP", "RGB"),
                                       ("WEBP", "RGB")])
def test_a_face_is_replaced_written_alike_and_recovered_only_with_the_secret(model, fmt, mode):
    original = np.asarray(Image.fromarray(photo(120, 110, seed=7)).convert(mode).convert("RGB"))
    data = encoded(np.asarray(Image.fromarray(original).convert(mode)), fmt,
                   **({"quality": 95} if fmt in ("JPEG", "WEBP") else {}))
    anonymizer = FileAnonymizer(model, FixedFaces(0.9), SECRET)
    outcome = anonymizer("clinic/ü 1." + fmt.lower(), data)
    assert outcome.status == ANONYMIZED and outcome.faces == 1 and outcome.reason is None
    with Image.open(io.BytesIO(outcome.output)) as written:
        assert written.format == fmt and written.mode == mode
        out = np.asarray(written.convert("RGB"))
    assert psnr(out, original) < 30  # the face changed
    assert anonymizer("clinic/ü 1." + fmt.lower(), data).output == outcome.output  # re-runs agree byte for byte
    restored, status = anonymizer.recover("clinic/ü 1." + fmt.lower(), outcome.output)
    with Image.open(io.BytesIO(restored)) as back:
        assert back.format == fmt
        assert status == RECOVERED and psnr(np.asarray(back.convert("RGB")), original) >= 30
    assert anonymizer.recover("another key", outcome.output)[1] == WRONG_PASSWORD


def test_no_face_or_only_a_borderline_one_fails_closed(model):
    data = encoded(photo(64, 64), "PNG")
    assert FileAnonymizer(model, FixedFaces(), SECRET)("a.png", data).status == QUARANTINED
    borderline = FileAnonymizer(model, FixedFaces(0.4), SECRET)("a.png", data)
    assert borderline.status == QUARANTINED and "borderline" in borderline.reason and borderline.output is None
    passed = FileAnonymizer(model, FixedFaces(), SECRET, pass_faceless=True)("a.png", data)
    assert passed.status == NO_FACE and passed.output and passed.faces == 0
    both = FileAnonymizer(model, FixedFaces(0.9, 0.4), SECRET)("a.png", data)
    assert both.status == ANONYMIZED and both.faces == 2  # with a real face found, the borderline one goes too
    bad = FileAnonymizer(model, FixedFaces(0.9), SECRET)("notes.jpg", b"not a photo at all")
    assert bad.status == QUARANTINED and "not an image" in bad.reason


def test_a_dicom_photo_is_anonymized_header_and_face(model):
    data = dicom_photo(generate_uid())
    outcome = FileAnonymizer(model, FixedFaces(0.9), SECRET)("study/1.dcm", data)
    assert outcome.status == ANONYMIZED
    for value in PHI.values():
        assert value.encode() not in outcome.output
    assert pydicom.dcmread(io.BytesIO(outcome.output)).PatientIdentityRemoved == "YES"
    assert b"archive secret" not in outcome.output


class TwoFaces:
    """Two faces side by side, the second `shift` pixels to the right of the first."""

    def __init__(self, shift: int):
        self.shift = shift

    def detect(self, image):
        return [Found(0.9, LANDMARKS), Found(0.8, LANDMARKS + [self.shift, 0])]


def test_every_face_of_a_photo_is_replaced_and_each_comes_back(model):
    left, right = photo(120, 110, seed=3), photo(120, 110, seed=4)
    original = np.concatenate([left, right], axis=1)  # two patients in one photo
    anonymizer = FileAnonymizer(model, TwoFaces(110), SECRET)
    outcome = anonymizer("consult/two patients.png", encoded(original, "PNG"))
    assert outcome.status == ANONYMIZED and outcome.faces == 2
    with Image.open(io.BytesIO(outcome.output)) as written:
        out = np.asarray(written.convert("RGB"))
    assert psnr(out[:, :110], left) < 30 and psnr(out[:, 110:], right) < 30  # both faces changed
    restored, status = anonymizer.recover("consult/two patients.png", outcome.output)
    with Image.open(io.BytesIO(restored)) as back:
        back = np.asarray(back.convert("RGB"))
    assert status == RECOVERED and np.array_equal(back, original)  # lossless seals, a PNG: exact


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "TIFF", "DICOM", "BMP", "WEBP"])
def test_separate_and_none_modes_leave_nothing_recoverable_in_the_file(model, fmt):
    original = photo(120, 110, seed=5)
    data = dicom_photo(generate_uid(), rgb=original) if fmt == "DICOM" else encoded(original, fmt)
    key = f"clinic/2024/kept apart.{fmt.lower()}"
    anonymizers = {m: FileAnonymizer(model, FixedFaces(0.9), SECRET, recovery=m) for m in (EMBEDDED, SEPARATE, NONE)}
    embedded, separate, none = (anonymizers[m](key, data) for m in (EMBEDDED, SEPARATE, NONE))
    seals = list(separate.seals)
    assert (embedded.recovery, separate.recovery, none.recovery) == (EMBEDDED, SEPARATE, NONE)
    assert len(seals) == 1 and embedded.seals == none.seals == ()
    assert carrier.detach(embedded.output) == seals and seal_traces(embedded.output, seals)  # the check sees them
    assert seal_traces(separate.output, seals) == [] and seal_traces(none.output, seals) == []
    assert separate.output == none.output  # nothing extra rides in a separate-mode file
    assert len(embedded.output) - len(separate.output) >= len(seals[0])  # the sealed face's bytes are not in it
    restored, status = anonymizers[SEPARATE].recover(key, separate.output, seals)
    assert status == RECOVERED and psnr(Decoded.of(restored).rgb, original) >= 30
    assert psnr(Decoded.of(separate.output).rgb, original) < 30
    assert anonymizers[SEPARATE].recover(key, separate.output)[1] == NO_RECOVERY_DATA
    assert anonymizers[SEPARATE].recover("another key", separate.output, seals)[1] == WRONG_PASSWORD


class UprightWhenLandscape:
    """Finds the face only in a landscape image: the photo as stored, not as its EXIF tag turns it."""

    def detect(self, image):
        return [Found(0.9, LANDMARKS)] if image.shape[1] > image.shape[0] else []


def test_a_face_turned_sideways_by_exif_is_found_as_stored_and_replaced_where_it_shows(model):
    from medeid.archive.formats import displayed_points

    stored = photo(96, 128, seed=11)  # landscape as stored; the tag turns it to portrait
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encoded(stored, "PNG", exif=exif.tobytes())
    outcome = FileAnonymizer(model, UprightWhenLandscape(), SECRET)("ward/turned.png", data)
    assert outcome.status == ANONYMIZED and outcome.faces == 1
    assert "as stored" in outcome.reason and "orientation 6" in outcome.reason
    with Image.open(io.BytesIO(outcome.output)) as written:
        out = np.asarray(written.convert("RGB"))
    shown = np.rot90(stored, k=-1)  # orientation 6: turned 90 degrees clockwise, as written
    assert out.shape == shown.shape
    nose_x, nose_y = displayed_points(LANDMARKS[2:3], 6, (128, 96))[0].round().astype(int)
    around = np.s_[nose_y - 8:nose_y + 8, nose_x - 8:nose_x + 8]
    assert psnr(out[around], shown[around]) < 25
    assert np.array_equal(out[-6:], shown[-6:])  # far from the face: untouched
    # A detector that sees it with the tag applied needs no second look; the manifest says so too.
    applied = FileAnonymizer(model, FixedFaces(0.9), SECRET)("ward/turned.png", data)
    assert applied.status == ANONYMIZED and applied.reason == "orientation: EXIF orientation 6 applied"
    # Upright in neither orientation: fails closed as before.
    nowhere = FileAnonymizer(model, FixedFaces(), SECRET)("ward/turned.png", data)
    assert nowhere.status == QUARANTINED and "no face" in nowhere.reason
