"""One archive file in, its anonymized copy (or the reason it is quarantined) out: no Ray here.

    anonymizer = FileAnonymizer(model, detector, secret)
    outcome = anonymizer("clinic/2024/ptosis 01.jpg", data)   # -> FileOutcome

Per file: recognise it by content and decode it (`formats`, `dicom`); find every face; replace each
with MedSem-DeID under the file's own password (derived from the archive secret and the file's key,
so any file can be restored and no two share a password); write it back in its own format with no
metadata but the ICC profile (DICOM: the basic profile); carry each face's sealed original in the
file (`carrier`).

It fails closed: a photo in which no face is found, or only a borderline one, is quarantined (a
missed face is a leaked patient) unless the archive is declared to hold faceless images
(`pass_faceless`), which then pass with their metadata stripped. When a confident face is found,
borderline detections in the same photo are replaced too: replacing a shadow costs little.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import numpy as np

from medeid.archive import carrier, dicom, formats
from medeid.archive.formats import Rejected
from medeid.archive.manifest import ANONYMIZED, NO_FACE, QUARANTINED
from medeid.models.deid.api import NO_RECOVERY_DATA, RECOVERED, MedSemDeID
from medeid.passwords import Secret, image_password

DICOM_UID_CONTEXT = b"medeid/dicom-uid/v1"


class Face(Protocol):
    score: float
    landmarks: np.ndarray  # (5, 2) x, y


class FaceFinder(Protocol):
    def detect(self, image_rgb_uint8: np.ndarray) -> Sequence[Face]: ...


@dataclass(frozen=True)
class FileOutcome:
    status: str  # manifest status: anonymized | no_face | quarantined
    reason: str | None = None
    output: bytes | None = None  # the anonymized file; None when quarantined
    faces: int = 0


@dataclass(frozen=True)
class Decoded:
    """A file's pixels for the models, and how to write pixels back in its format and layout."""

    rgb: np.ndarray  # (H, W, 3) uint8
    photo: formats.Photo | None = None  # JPEG, PNG, TIFF
    dataset: Any = None  # DICOM: the pydicom dataset, whose header the writer keeps

    @classmethod
    def of(cls, data: bytes, max_pixels: int = formats.MAX_PIXELS) -> "Decoded":
        if formats.sniff(data) == formats.DICOM:
            dataset, rgb = dicom.read_dicom(data)
            return cls(rgb, dataset=dataset)
        photo = formats.read_photo(data, max_pixels)
        return cls(photo.rgb, photo=photo)

    def encode(self, rgb: np.ndarray, jpeg_quality: int = formats.JPEG_QUALITY) -> bytes:
        if self.dataset is None:
            return formats.write_photo(self.photo, rgb, jpeg_quality)
        return dicom.write_dicom(self.dataset, rgb, grey=self.dataset.get("PhotometricInterpretation") == "MONOCHROME2")


def dicom_uid_key(secret: Secret) -> bytes:
    """The key DICOM UIDs are mapped under: one per archive secret, never the secret itself."""
    return hmac.new(secret.reveal(), DICOM_UID_CONTEXT, hashlib.sha256).digest()


class FileAnonymizer:
    def __init__(self, model: MedSemDeID, detector: FaceFinder, secret: Secret, *, face_threshold: float = 0.5,
                 borderline_threshold: float = 0.3, pass_faceless: bool = False,
                 max_pixels: int = formats.MAX_PIXELS):
        if not borderline_threshold <= face_threshold:
            raise ValueError("borderline_threshold must not exceed face_threshold")
        self.model, self.detector, self.secret = model, detector, secret
        self.face_threshold, self.borderline_threshold = face_threshold, borderline_threshold
        self.pass_faceless, self.max_pixels = pass_faceless, max_pixels
        self.uid_key = dicom_uid_key(secret)

    def __call__(self, key: str, data: bytes) -> FileOutcome:
        try:
            return self._anonymize(key, data)
        except Rejected as rejected:
            return FileOutcome(QUARANTINED, rejected.reason)

    def _anonymize(self, key: str, data: bytes) -> FileOutcome:
        decoded = Decoded.of(data, self.max_pixels)
        found = [f for f in self.detector.detect(decoded.rgb) if f.score >= self.borderline_threshold]
        confident = [f for f in found if f.score >= self.face_threshold]
        if not confident:
            if found:
                return FileOutcome(QUARANTINED, f"only a borderline face (detector score {found[0].score:.2f} < "
                                                f"{self.face_threshold}): fails closed")
            if not self.pass_faceless:
                return FileOutcome(QUARANTINED, "no face found: fails closed (pass_faceless is off)")
            out, seals, status, reason = decoded.rgb, [], NO_FACE, "no face found; passed with metadata stripped"
        else:
            password = image_password(self.secret, key)
            out, seals = self.model.deidentify_faces(decoded.rgb, password, [f.landmarks for f in found])
            status, reason = ANONYMIZED, None
        if decoded.dataset is not None:
            dicom.anonymize_header(decoded.dataset, self.uid_key)
        encoded = decoded.encode(out)
        return FileOutcome(status, reason, carrier.attach(encoded, seals) if seals else encoded, len(seals))

    def recover(self, key: str, data: bytes) -> tuple[bytes, str]:
        return recover_file(self.model, self.secret, key, data)


def recover_file(model: MedSemDeID, secret: Secret, key: str, data: bytes) -> tuple[bytes, str]:
    """A file this job anonymized, with its faces restored from the seals it carries, encoded in its
    format again; and the status: recovered | wrong password | no recovery data. The header of a
    DICOM stays de-identified: only the pixels are the patient's again."""
    seals = carrier.detach(data)
    if not seals:
        return data, NO_RECOVERY_DATA
    decoded = Decoded.of(data)
    restored, status = model.recover_faces(decoded.rgb, image_password(secret, key), seals)
    if status != RECOVERED:
        return data, status
    return decoded.encode(restored, jpeg_quality=formats.RESTORED_JPEG_QUALITY), status
