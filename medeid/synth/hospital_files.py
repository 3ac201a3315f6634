"""A synthetic hospital photo archive as files, the way archives really look: the archive job's test
bed, demo input and benchmark load.

    files = hospital_files(photos=240, seed=0)    # -> [ArchiveFile(key, data, expected), ...]
    write_files(files, "s3://bucket/archive", settings)

Patient photos from the synthetic cohort come in every form the job must handle: JPEG with camera
EXIF and GPS (some rotated, with the orientation in EXIF), PNG, greyscale, CMYK JPEG, TIFF, 16-bit
greyscale PNG, and DICOM secondary captures whose headers carry PHI and a private block. Keys nest
by year and disease and hold spaces and non-ASCII names. Then every kind of trouble, once each:
empty, text named `.jpg`, truncated and corrupt JPEGs, a decompression bomb, an animated GIF, a
faceless photo, a CT-like DICOM. Each file says which status the job must give it.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image

from medeid import storage
from medeid.archive.manifest import ANONYMIZED, QUARANTINED
from medeid.synth.cohort import cohort_rows, render_row

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
# What a DICOM export from a clinic holds about its patient; none of it may reach the output.
PHI = {"PatientName": "Doe^Jane", "PatientID": "MRN-0042", "PatientBirthDate": "19700101",
       "InstitutionName": "St Example Eye Clinic", "ReferringPhysicianName": "Smith^John",
       "StudyDate": "20260101", "AccessionNumber": "ACC-777", "PatientAddress": "1 Main Street"}
PRIVATE_NOTE = "secret private note about Jane Doe"
CAMERA_MAKE = "ClinicCam"
NAMES = ["patient", "Zoë Ärztin", "Łukasz O'Brien", "José Müller", "李 华", "Anne-Marie Dupré"]
# (extension, how a photo is stored) in turn; JPEG leads, as in real archives.
FORMS = ["jpeg", "jpeg-rotated", "png", "jpeg", "grey-png", "cmyk-jpeg", "tiff", "jpeg", "png-16bit", "dicom"]
EXTENSIONS = {"jpeg": "jpg", "jpeg-rotated": "jpg", "png": "png", "grey-png": "png", "cmyk-jpeg": "jpg",
              "tiff": "tif", "png-16bit": "png", "dicom": "dcm"}


@dataclass(frozen=True)
class ArchiveFile:
    key: str
    data: bytes
    expected: str  # the status the archive job must give it


def hospital_files(photos: int = 240, seed: int = 0, size: int = 128) -> list[ArchiveFile]:
    """`photos` patient photos in turn through `FORMS`, then one file of every kind of trouble."""
    rows = cohort_rows(max(1, -(-photos // 2)), 2, seed=seed)[:photos]
    files = []
    for n, row in enumerate(rows):
        form = FORMS[n % len(FORMS)]
        name = NAMES[n % len(NAMES)]
        key = (f"{2020 + n % 5}/{row['disease']}/{name} {row['patient_id']} visit {row['photo_index'] + 1}"
               f".{EXTENSIONS[form]}")
        files.append(ArchiveFile(key, stored(render_row(row, size).image, form, uid_seed=seed * 100_003 + n),
                                 ANONYMIZED))
    return files + trouble_files(seed, size)


def stored(rgb: np.ndarray, form: str, uid_seed: int = 0) -> bytes:
    """An upright RGB photo as a file of the given form (`FORMS`)."""
    image = Image.fromarray(rgb)
    if form == "jpeg":
        return encoded(image, "JPEG", exif=camera_exif(), quality=92)
    if form == "jpeg-rotated":  # the camera was held sideways: pixels rotated, EXIF says how to show them
        return encoded(image.transpose(Image.Transpose.ROTATE_90), "JPEG", exif=camera_exif(orientation=6),
                       quality=92)
    if form == "png":
        return encoded(image, "PNG")
    if form == "grey-png":
        return encoded(image.convert("L"), "PNG")
    if form == "cmyk-jpeg":
        return encoded(image.convert("CMYK"), "JPEG", quality=92)
    if form == "tiff":
        return encoded(image, "TIFF", compression="tiff_deflate")
    if form == "png-16bit":
        return encoded(Image.fromarray(np.asarray(image.convert("L")).astype(np.uint16) * 257), "PNG")
    if form == "dicom":
        return dicom_photo(uid_seed, rgb=rgb)
    raise ValueError(f"unknown form {form!r}; one of {FORMS}")


def trouble_files(seed: int = 0, size: int = 128) -> list[ArchiveFile]:
    """One file of every kind the job must quarantine."""
    faces = [Image.fromarray(render_row(row, size).image) for row in cohort_rows(2, 1, seed=seed + 7919)]
    jpeg = encoded(faces[0], "JPEG", quality=92)
    corrupt = bytearray(jpeg)
    table = jpeg.index(b"\xff\xc4")  # a Huffman table: zeroed, the scan cannot be decoded
    corrupt[table + 5:table + 25] = bytes(20)
    sheet = Image.linear_gradient("L").convert("RGB").resize((size, size))
    return [
        ArchiveFile("incoming/empty upload.jpg", b"", QUARANTINED),
        ArchiveFile("incoming/notes.jpg", b"Doe^Jane, MRN 0042: follow-up in 6 weeks\n", QUARANTINED),
        ArchiveFile("incoming/truncated.jpg", jpeg[:len(jpeg) // 3], QUARANTINED),
        ArchiveFile("incoming/corrupt.jpg", bytes(corrupt), QUARANTINED),
        ArchiveFile("incoming/bomb.png", bomb(), QUARANTINED),
        ArchiveFile("incoming/animated.gif", encoded(faces[0], "GIF", save_all=True, append_images=[faces[1]]),
                    QUARANTINED),
        ArchiveFile("incoming/colour chart.png", encoded(sheet, "PNG"), QUARANTINED),
        ArchiveFile("incoming/ct-like.dcm", dicom_photo(seed, sop_class=CT_IMAGE), QUARANTINED),
    ]


def write_files(files: list[ArchiveFile], root: str, settings: storage.S3Settings | None = None) -> None:
    for file in files:
        storage.write_bytes(storage.join(root, file.key), file.data, settings)


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def camera_exif(orientation: int = 1) -> bytes:
    """EXIF as a clinic camera writes it: make, orientation and where the photo was taken."""
    exif = Image.Exif()
    exif[0x010F] = CAMERA_MAKE
    exif[0x0112] = orientation
    exif.get_ifd(0x8825)[2] = (51.0, 30.0, 0.0)  # GPS latitude
    return exif.tobytes()


def bomb(side: int = 60_000) -> bytes:
    """A PNG a few hundred bytes long that claims `side` x `side` pixels."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def dicom_photo(uid_seed: int | str, sop_class: str = SECONDARY_CAPTURE, grey: bool = False,
                rgb: np.ndarray | None = None, study_uid: str | None = None) -> bytes:
    """A DICOM photograph as a clinic exports it: PHI in the header, a private block, the pixels."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    def uid(part: str) -> str:  # deterministic, so the same archive is the same bytes
        return generate_uid(entropy_srcs=[str(uid_seed), part])

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = uid("instance")
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid or uid("study"), uid("series")
    ds.Modality = "XC"
    for name, value in PHI.items():
        setattr(ds, name, value)
    ds.add_new((0x0011, 0x0010), "LO", "CLINIC PRIVATE")
    ds.add_new((0x0011, 0x1001), "LO", PRIVATE_NOTE)
    if rgb is None:
        y, x = np.mgrid[:32, :48]
        rgb = np.dstack([x * 5, y * 7, (x + y) * 3]).astype(np.uint8)
    ds.set_pixel_data(rgb[..., 0] if grey else rgb, "MONOCHROME2" if grey else "RGB", 8, generate_instance_uid=False)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
