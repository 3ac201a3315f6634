"""The archive job on the local S3 server and Ray: a prepared archive of faces and trouble, every
file accounted for once, nothing identifying left, quarantine untouched, a re-run skips everything."""

import io
import struct
import zlib
from dataclasses import asdict

import numpy as np
import pyarrow.compute as pc
import pytest
import torch
from PIL import Image
from pydicom.uid import generate_uid

from medeid import storage
from medeid.archive.manifest import ANONYMIZED, QUARANTINED, SKIPPED, latest, read_manifest
from medeid.models.deid.donors import synthetic_donors
from medeid.models.deid.model import DeidNetConfig, MedSemDeIDNet, donor_bank
from medeid.models.medical import MedicalNet, MedicalNetConfig
from medeid.passwords import Secret
from medeid.pipelines.anonymize import ArchiveLayout, anonymize_archive, recover_photos
from medeid.synth import cohort_rows, render_row
from tests.archive.test_dicom import PHI, dicom_photo
from tests.models.test_deid_api import psnr

SECRET_TEXT = "correct horse battery staple of the eye clinic"


@pytest.fixture(scope="module")
def models(tmp_path_factory, trained_detector):
    """The session's briefly trained detector pack and an untrained MedSem-DeID (replacement and
    recovery do not depend on its training)."""
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    medical = MedicalNet(MedicalNetConfig(image_size=64, widths=(8, 16, 24, 32))).eval()
    donors = donor_bank(synthetic_donors(6, 64), 64)
    deid = MedSemDeIDNet(DeidNetConfig(image_size=64, widths=(8, 16, 16), medical=asdict(medical.config),
                                       donors=len(donors)), donors)
    deid.save(root / "deid")
    return str(root / "deid"), str(trained_detector[1])


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def gps_exif() -> bytes:
    exif = Image.Exif()
    exif.get_ifd(0x8825)[2] = (51.0, 30.0, 0.0)
    exif[0x010F] = "ClinicCam"
    return exif.tobytes()


def bomb() -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def prepared_archive() -> dict[str, tuple[bytes, str]]:
    """key -> (content, the status the job must give it)."""
    faces = [Image.fromarray(render_row(row, 128).image) for row in cohort_rows(8, 1, seed=777)]
    files = {
        "2024/ptosis/patient 01.jpg": (encoded(faces[0], "JPEG", exif=gps_exif(), quality=95), ANONYMIZED),
        "2024/ptosis/ßeta ünïcode.png": (encoded(faces[1], "PNG"), ANONYMIZED),
        "2024/grey/g.png": (encoded(faces[2].convert("L"), "PNG"), ANONYMIZED),
        "2024/cmyk.jpg": (encoded(faces[3].convert("CMYK"), "JPEG"), ANONYMIZED),
        "2024/tiff/t.tif": (encoded(faces[4], "TIFF"), ANONYMIZED),
        "2025/deep/er/16bit.png": (encoded(Image.fromarray(np.asarray(faces[5].convert("L")).astype(np.uint16) * 257),
                                           "PNG"), ANONYMIZED),
        "bad/zero.jpg": (b"", QUARANTINED),
        "bad/notes.jpg": (b"Jane Doe, MRN 0042\n", QUARANTINED),
        "bad/truncated.jpg": (encoded(faces[6], "JPEG")[:900], QUARANTINED),
        "bad/bomb.png": (bomb(), QUARANTINED),
        "bad/animated.gif": (encoded(faces[6], "GIF", save_all=True, append_images=[faces[7]]), QUARANTINED),
        "bad/no face.png": (encoded(Image.linear_gradient("L").convert("RGB").resize((128, 128)), "PNG"), QUARANTINED),
        "dicom/face.dcm": (dicom_photo(generate_uid(), rgb=np.asarray(faces[7])), ANONYMIZED),
        "dicom/ct-like.dcm": (dicom_photo(generate_uid(), sop_class="1.2.840.10008.5.1.4.1.1.2"), QUARANTINED),
    }
    return files


def test_every_file_ends_in_exactly_one_row_and_a_rerun_skips_them_all(ray_session, bucket, s3, models,
                                                                      capfd):
    model_uri, detector_uri = models
    files = prepared_archive()
    for key, (data, _) in files.items():
        storage.write_bytes(f"{bucket}/in/{key}", data, s3.settings)
    secret = Secret(SECRET_TEXT)

    summary = anonymize_archive(f"{bucket}/in", f"{bucket}/out", model_uri, detector_uri, secret, run_id="first",
                                settings=s3.settings, actors=1)
    layout = ArchiveLayout.beside(f"{bucket}/in", f"{bucket}/out")
    assert summary.balanced and summary.inputs == len(files)
    rows = {r["input_key"]: r for r in read_manifest(layout.manifest, s3.settings, run_id="first").to_pylist()}
    assert sorted(rows) == sorted(files)
    for key, (data, expected) in files.items():
        assert rows[key]["status"] == expected, (key, rows[key]["reason"])
        if expected == QUARANTINED:
            assert rows[key]["reason"]
            assert storage.read_bytes(f"{layout.quarantine}/{key}", s3.settings) == data  # untouched
            assert not storage.exists(f"{layout.output}/{key}", s3.settings)
        else:
            out = storage.read_bytes(f"{layout.output}/{key}", s3.settings)
            assert rows[key]["faces"] >= 1 and rows[key]["output_sha256"]
            assert b"ClinicCam" not in out and b"GPS" not in out
            if key.endswith(".dcm"):
                assert not any(value.encode() in out for value in PHI.values())
                continue
            with Image.open(io.BytesIO(out)) as image:  # (a TIFF's own tags are its structure, not EXIF)
                assert 0x8825 not in image.getexif() and 0x010F not in image.getexif()  # GPS, camera make

    # The secret is nowhere: not in the manifest, the outputs, or anything the job printed.
    manifest_bytes = b"".join(storage.read_bytes(f, s3.settings) for f in storage.list_files(layout.manifest, s3.settings))
    assert SECRET_TEXT.encode() not in manifest_bytes
    printed = capfd.readouterr()
    assert SECRET_TEXT not in printed.out + printed.err and "inputs 14 = " in printed.out

    # Recovery: the chosen photos come back with their faces, and only with the secret.
    chosen = ["2024/ptosis/patient 01.jpg", "dicom/face.dcm", "bad/notes.jpg"]
    statuses = recover_photos(layout, chosen, f"{bucket}/restored", model_uri, secret, s3.settings)
    assert statuses[chosen[0]] == statuses[chosen[1]] == "recovered" and "not restored" in statuses[chosen[2]]
    with Image.open(io.BytesIO(storage.read_bytes(f"{bucket}/restored/{chosen[0]}", s3.settings))) as back, \
            Image.open(io.BytesIO(files[chosen[0]][0])) as original, \
            Image.open(io.BytesIO(storage.read_bytes(f"{layout.output}/{chosen[0]}", s3.settings))) as anonymous:
        restored_psnr = psnr(np.asarray(back.convert("RGB")), np.asarray(original.convert("RGB")))
        assert restored_psnr >= 30 > psnr(np.asarray(anonymous.convert("RGB")), np.asarray(original.convert("RGB")))
    wrong = recover_photos(layout, chosen[:1], f"{bucket}/wrong", model_uri, Secret("a guess"), s3.settings)
    assert wrong[chosen[0]] == "wrong password" and not storage.exists(f"{bucket}/wrong/{chosen[0]}", s3.settings)

    before = {f: storage.read_bytes(f, s3.settings) for f in storage.list_files(layout.output, s3.settings)}
    again = anonymize_archive(f"{bucket}/in", f"{bucket}/out", model_uri, detector_uri, secret, run_id="second",
                              settings=s3.settings, actors=1)
    assert again.balanced and again.counts[SKIPPED] == len(files)
    assert {f: storage.read_bytes(f, s3.settings) for f in storage.list_files(layout.output, s3.settings)} == before
    everything = read_manifest(layout.manifest, s3.settings)
    assert len(latest(everything)) == len(files)  # still one finished row per file
    assert pc.sum(pc.equal(everything["run_id"], "second")).as_py() == len(files)
