"""One archive file in, its anonymized copy (or the reason it is quarantined) out: no Ray here.

    anonymizer = FileAnonymizer(model, detector, secret)
    outcome = anonymizer("clinic/2024/ptosis 01.jpg", data)   # -> FileOutcome

Per file: recognise it by content and decode it (`formats`, `dicom`); find every face; replace each
with MedSem-DeID under the file's own password (derived from the archive secret and the file's key,
so any file can be restored and no two share a password); write it back in its own format with no
metadata but the ICC profile (DICOM: the basic profile); keep each face's sealed original where the
recovery mode says (`recovery`): in the file (`carrier`), apart from it for a private store, or nowhere.

It fails closed: a photo in which no face is found, or only a borderline one, is quarantined (a
missed face is a leaked patient) unless the archive is declared to hold faceless images
(`pass_faceless`), which then pass with their metadata stripped. When a confident face is found,
borderline detections in the same photo are replaced too: replacing a shadow costs little. A photo
whose EXIF orientation leaves no face upright is tried as stored too (a wrong tag turns an upright
face sideways); the manifest's reason says which orientation found its faces.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from medeid import storage
from medeid.archive import carrier, dicom, formats
from medeid.archive.formats import Rejected
from medeid.archive.manifest import ANONYMIZED, NO_FACE, QUARANTINED
from medeid.archive.recovery import EMBEDDED, SEPARATE, check_mode
from medeid.models.deid.api import NO_RECOVERY_DATA, RECOVERED, MedSemDeID, Password
from medeid.passwords import Secret, derive_model_key, image_password
from medeid.threads import thread_map

DICOM_UID_CONTEXT = b"medeid/dicom-uid/v1"
# Detections between this share of the detector's threshold and the threshold are borderline: a photo
# with nothing better is quarantined. The detector runs at the lower bound so that it reports them.
BORDERLINE_SHARE = 0.6


class Face(Protocol):
    score: float
    landmarks: np.ndarray  # (5, 2) x, y


@dataclass(frozen=True)
class _Turned:
    """A face found in the stored pixels, its landmarks moved into the photo as displayed."""

    score: float
    landmarks: np.ndarray


class FaceFinder(Protocol):
    def detect(self, image_rgb_uint8: np.ndarray) -> Sequence[Face]: ...


# Why a file with no confident face is quarantined (the other kinds are `formats.Rejected`'s).
NO_FACE_FOUND, BORDERLINE_FACE = "no_face", "borderline_face"


@dataclass(frozen=True)
class FileOutcome:
    status: str  # manifest status: anonymized | no_face | quarantined
    reason: str | None = None
    output: bytes | None = None  # the anonymized file; None when quarantined
    faces: int = 0
    problem: str | None = None  # quarantined: the kind of trouble (formats' kinds, no_face, borderline_face)
    recovery: str | None = None  # where the seals went (`recovery` modes); None when quarantined
    seals: tuple[bytes, ...] = ()  # `separate` mode only: the seals the file does not carry


@dataclass(frozen=True)
class Decoded:
    """A file's pixels for the models, and how to write pixels back in its format and layout."""

    rgb: np.ndarray  # (H, W, 3) uint8
    photo: formats.Photo | None = None  # JPEG, PNG, TIFF
    dataset: Any = None  # DICOM: the pydicom dataset, whose header the writer keeps

    @classmethod
    def of(cls, data: bytes, max_pixels: int = formats.MAX_PIXELS) -> "Decoded":
        if formats.sniff(data) == formats.DICOM:
            dataset, rgb = dicom.read_dicom(data, max_pixels)
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


@dataclass
class _Planned:
    """A decoded file and the faces to replace in it."""

    decoded: Decoded
    faces: list  # landmarks, one (5, 2) array per face
    status: str
    reason: str | None


class FileAnonymizer:
    """Files in, anonymized files (or why not) out. `secret` is the archive's: each file's password
    is derived from it and the file's key (`__call__`). Without one, callers give each file's
    password (`anonymize`, as the serving endpoint does). `recovery` is the default mode for where
    the seals go (`medeid.archive.recovery`)."""

    def __init__(self, model: MedSemDeID, detector: FaceFinder, secret: Secret | None, *, face_threshold: float = 0.5,
                 borderline_threshold: float = 0.3, pass_faceless: bool = False,
                 max_pixels: int = formats.MAX_PIXELS, recovery: str = EMBEDDED, surround: float = 0.0):
        if not borderline_threshold <= face_threshold:
            raise ValueError("borderline_threshold must not exceed face_threshold")
        self.model, self.detector, self.secret, self.recovery = model, detector, secret, check_mode(recovery)
        self.face_threshold, self.borderline_threshold = face_threshold, borderline_threshold
        self.pass_faceless, self.max_pixels = pass_faceless, max_pixels
        if surround and surround <= 1:
            raise ValueError(f"surround is the blurred head's size as a multiple of the face crop's: > 1 or 0, "
                             f"not {surround}")
        self.surround = surround
        self.uid_key = dicom_uid_key(secret) if secret is not None else None

    @classmethod
    def from_uris(cls, model_uri: str, detector_uri: str, secret: Secret | None,
                  settings: storage.S3Settings | None = None, device: str = "cpu", **options) -> "FileAnonymizer":
        """The models loaded from their URIs, the detector at its pack's threshold (and reporting
        borderline faces from `BORDERLINE_SHARE` of it)."""
        from medeid.models.detector import load_detector

        model = MedSemDeID.from_uri(model_uri, settings, device=device)
        return cls.with_detector(model, load_detector(detector_uri, settings), secret, **options)

    @classmethod
    def with_detector(cls, model: MedSemDeID, detector, secret: Secret | None, **options) -> "FileAnonymizer":
        """Faces at the detector's own threshold; it is lowered to `BORDERLINE_SHARE` of that so that it
        reports borderline faces too."""
        threshold = detector.det_thresh
        detector.set_threshold(threshold * BORDERLINE_SHARE)
        return cls(model, detector, secret, face_threshold=threshold, borderline_threshold=detector.det_thresh,
                   **options)

    def __call__(self, key: str, data: bytes) -> FileOutcome:
        """One archive file, under its own password (from the archive secret and `key`)."""
        if self.secret is None:
            raise ValueError("this anonymizer has no archive secret: give passwords to `anonymize`")
        return self.anonymize([lambda: image_password(self.secret, key)], [data])[0]

    def anonymize(self, passwords: Sequence[Password | Callable[[], Password]], files: Sequence[bytes],
                  recovery: Sequence[str] | None = None) -> list[FileOutcome]:
        """Several files, each under its own password (or a function giving it, called only for files
        with a face) and recovery mode (default: this anonymizer's), with one batched pass of the
        network over their faces."""
        modes = [check_mode(m) for m in recovery] if recovery is not None else [self.recovery] * len(files)
        plans = thread_map(self._plan, files)  # decoding and detection: per file, in parallel
        todo = [i for i, plan in enumerate(plans) if isinstance(plan, _Planned) and plan.faces]
        keyed = {i: passwords[i]() if callable(passwords[i]) else passwords[i] for i in todo}
        replaced = dict(zip(todo, self.model.deidentify_faces_batch(
            [plans[i].decoded.rgb for i in todo], [keyed[i] for i in todo], [plans[i].faces for i in todo],
            self.surround)))
        return thread_map(lambda i: self._finish(plans[i], *replaced.get(i, (None, [])), keyed.get(i), modes[i]),
                          range(len(plans)))

    def _finish(self, plan: "_Planned | FileOutcome", out: np.ndarray | None, seals: list[bytes],
                password: Password | None, recovery: str) -> FileOutcome:
        """The anonymized file, written in its format, its seals where `recovery` says (quarantine
        outcomes pass through)."""
        if isinstance(plan, FileOutcome):
            return plan
        if plan.decoded.dataset is not None:
            dicom.anonymize_header(plan.decoded.dataset, self.uid_key or self._uid_key_of(password))
        encoded = plan.decoded.encode(plan.decoded.rgb if out is None else out)
        if recovery == EMBEDDED and seals:
            encoded = carrier.attach(encoded, seals)
        kept_apart = tuple(seals) if recovery == SEPARATE else ()  # `none`: the seals go no further
        return FileOutcome(plan.status, plan.reason, encoded, len(seals), recovery=recovery, seals=kept_apart)

    def _plan(self, data: bytes) -> _Planned | FileOutcome:
        """Decode and find the faces: what to replace, or why the file is quarantined."""
        try:
            decoded = Decoded.of(data, self.max_pixels)
        except Rejected as rejected:
            return FileOutcome(QUARANTINED, rejected.reason, problem=rejected.kind)
        found, orientation = self._find(decoded)
        if any(f.score >= self.face_threshold for f in found):
            return _Planned(decoded, [f.landmarks for f in found], ANONYMIZED, orientation)
        if found:
            return FileOutcome(QUARANTINED, f"only a borderline face (detector score {found[0].score:.2f} < "
                                            f"{self.face_threshold}): fails closed", problem=BORDERLINE_FACE)
        if not self.pass_faceless:
            return FileOutcome(QUARANTINED, "no face found: fails closed (pass_faceless is off)", problem=NO_FACE_FOUND)
        return _Planned(decoded, [], NO_FACE, "no face found; passed with metadata stripped")

    def _find(self, decoded: Decoded) -> tuple[list, str | None]:
        """The faces to replace, in the photo as displayed, and the orientation used (None: no EXIF turn).
        With no confident face upright under the EXIF orientation, the stored pixels are searched too."""
        found = [f for f in self.detector.detect(decoded.rgb) if f.score >= self.borderline_threshold]
        orientation = decoded.photo.orientation if decoded.photo is not None else 1
        if orientation == 1:
            return found, None
        if not any(f.score >= self.face_threshold for f in found):
            stored = formats.stored_pixels(decoded.rgb, orientation)
            upright = [f for f in self.detector.detect(stored) if f.score >= self.borderline_threshold]
            if any(f.score >= self.face_threshold for f in upright):
                size = (stored.shape[1], stored.shape[0])
                return ([_Turned(f.score, formats.displayed_points(f.landmarks, orientation, size)) for f in upright],
                        f"orientation: as stored (EXIF orientation {orientation} ignored: it left no face upright)")
        return found, f"orientation: EXIF orientation {orientation} applied"

    @staticmethod
    def _uid_key_of(password: Password | None) -> bytes:
        """Without an archive secret, a DICOM's UIDs are mapped under a key of its password (through the
        KDF: a mapped UID is no cheap test of a guessed password); a faceless DICOM's, under a random one."""
        if password is None:
            return os.urandom(32)
        return hmac.new(derive_model_key(password).cipher_key, DICOM_UID_CONTEXT, hashlib.sha256).digest()

    def recover(self, key: str, data: bytes, seals: Sequence[bytes] | None = None) -> tuple[bytes, str]:
        return recover_file(self.model, image_password(self.secret, key), data, seals)


def recover_file(model: MedSemDeID, password: Password, data: bytes,
                 seals: Sequence[bytes] | None = None) -> tuple[bytes, str]:
    """A file this job anonymized, with its faces restored from `seals` (kept apart from it, the
    `separate` mode) or else from the seals it carries, encoded in its format again; and the
    status: recovered | wrong password | no recovery data. The header of a DICOM stays
    de-identified: only the pixels are the patient's again."""
    seals = list(seals) if seals is not None else carrier.detach(data)
    if not seals:
        return data, NO_RECOVERY_DATA
    decoded = Decoded.of(data)
    restored, status = model.recover_faces(decoded.rgb, password, seals)
    if status != RECOVERED:
        return data, status
    return decoded.encode(restored, jpeg_quality=formats.RESTORED_JPEG_QUALITY), status
