"""DICOM photographs: the pixel data anonymized like any photo, the header by the DICOM basic profile.

Accepted: VL Photographic Image and Secondary Capture instances (a clinic's camera photos as
DICOM), one frame, RGB or monochrome. Anything else is `Rejected` with its reason (a CT slice has
no face to replace and is not this job's to pass through).

The header goes through `dicomanonymizer`'s implementation of the basic application level
confidentiality profile (DICOM PS3.15 Annex E, every attribute with its D/Z/X/U action; private
tags removed). Its UID replacement is random; medeid maps each UID instead to `2.25.<n>`, `n` from
an HMAC of the UID under a key derived from the archive secret, so re-runs give the same UIDs,
instances of one study keep one StudyInstanceUID, and nobody without the secret can map back.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import threading

import numpy as np
import pydicom
from dicomanonymizer import simpledicomanonymizer
from pydicom.uid import ExplicitVRLittleEndian

from medeid.archive.formats import CORRUPT, MAX_PIXELS, TOO_LARGE, UNSUPPORTED, Rejected

PHOTO_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.77.1.4": "VL Photographic Image",
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture Image",
    "1.2.840.10008.5.1.4.1.1.7.4": "Multi-frame True Color Secondary Capture Image",
}
# The library keeps its UID map in a module global: one file at a time per process.
_UID_LOCK = threading.Lock()


def mapped_uid(uid: str, uid_key: bytes) -> str:
    """A UID's replacement: `2.25.` and a 128-bit integer from HMAC-SHA256(uid_key, uid) (PS3.5 B.2)."""
    digest = hmac.new(uid_key, uid.encode(), hashlib.sha256).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"


def read_dicom(data: bytes, max_pixels: int = MAX_PIXELS) -> tuple[pydicom.Dataset, np.ndarray]:
    """The dataset and its pixels as (H, W, 3) uint8 RGB; `Rejected` for what is not a photo."""
    try:
        dataset = pydicom.dcmread(io.BytesIO(data))
        sop_class = str(dataset.get("SOPClassUID", ""))
        if sop_class not in PHOTO_CLASSES:
            raise Rejected(f"unsupported DICOM: SOP class {sop_class or 'missing'} is not a photograph", UNSUPPORTED)
        if int(dataset.get("NumberOfFrames", 1) or 1) != 1:
            raise Rejected("unsupported DICOM: several frames", UNSUPPORTED)
        if int(dataset.get("BitsAllocated", 8)) != 8:
            raise Rejected(f"unsupported DICOM: {dataset.BitsAllocated}-bit photograph", UNSUPPORTED)
        rows, columns = int(dataset.get("Rows", 0) or 0), int(dataset.get("Columns", 0) or 0)
        if rows * columns > max_pixels:  # refused from the header, before the pixels are decoded
            raise Rejected(f"too many pixels: {columns} x {rows} (limit {max_pixels:,})", TOO_LARGE)
        pixels = dataset.pixel_array  # decompresses JPEG and converts YBR to RGB where pydicom can
    except Rejected:
        raise
    except Exception as error:  # pydicom raises many kinds for malformed files
        raise Rejected(f"corrupt dicom: {type(error).__name__}: {error}", CORRUPT) from None
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=2)
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise Rejected(f"unsupported DICOM: pixel array of shape {pixels.shape}", UNSUPPORTED)
    return dataset, np.ascontiguousarray(pixels.astype(np.uint8))


def anonymize_header(dataset: pydicom.Dataset, uid_key: bytes) -> None:
    """Apply the basic profile in place, with UIDs mapped under `uid_key`."""
    uids: dict[str, str] = {}

    def collect(ds, element):
        if element.VR == "UI" and element.value:
            values = element.value if isinstance(element.value, (list, pydicom.multival.MultiValue)) else [element.value]
            uids.update({str(v): mapped_uid(str(v), uid_key) for v in values if v})

    dataset.walk(collect)
    if hasattr(dataset, "file_meta"):
        dataset.file_meta.walk(collect)
    with _UID_LOCK:
        simpledicomanonymizer.dictionary.clear()
        simpledicomanonymizer.dictionary.update(uids)  # get_UID looks here first: our mapping wins
        try:
            simpledicomanonymizer.anonymize_dataset(dataset, delete_private_tags=True)
        finally:
            simpledicomanonymizer.dictionary.clear()
    dataset.PatientIdentityRemoved = "YES"
    dataset.DeidentificationMethod = "PS3.15 basic profile; medeid face replacement"  # LO: 64 chars at most
    if hasattr(dataset, "file_meta") and "SOPInstanceUID" in dataset:
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID


def write_dicom(dataset: pydicom.Dataset, rgb: np.ndarray, grey: bool) -> bytes:
    """The dataset with `rgb` as its pixel data, uncompressed (Explicit VR Little Endian)."""
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    pixels = np.rint(rgb.mean(axis=2)).astype(np.uint8) if grey else rgb
    dataset.set_pixel_data(pixels, "MONOCHROME2" if grey else "RGB", 8, generate_instance_uid=False)
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
