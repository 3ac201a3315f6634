"""DICOM photographs: basic-profile headers with secret-keyed UIDs, pixel data replaced, others refused."""

import io

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from medeid.archive.dicom import PHOTO_CLASSES, anonymize_header, mapped_uid, read_dicom, write_dicom
from medeid.archive.formats import Rejected, sniff
from medeid.synth.hospital_files import CT_IMAGE, PHI, PRIVATE_NOTE, SECONDARY_CAPTURE, dicom_photo


def anonymized(data: bytes, key: bytes, change=lambda rgb: rgb) -> bytes:
    dataset, rgb = read_dicom(data)
    grey = dataset.PhotometricInterpretation == "MONOCHROME2"
    anonymize_header(dataset, key)
    return write_dicom(dataset, change(rgb), grey)


def test_no_phi_survives_and_uids_are_mapped_by_the_secret():
    study = generate_uid()
    first, second = dicom_photo("first", study_uid=study), dicom_photo("second", study_uid=study)
    assert sniff(first) == "dicom"
    out = anonymized(first, b"key-1")
    for value in [*PHI.values(), PRIVATE_NOTE, study]:
        assert value.encode() not in out, value
    ds = pydicom.dcmread(io.BytesIO(out))
    assert ds.PatientIdentityRemoved == "YES" and ds.SOPClassUID == SECONDARY_CAPTURE
    assert ds.StudyInstanceUID == mapped_uid(study, b"key-1") and ds.StudyInstanceUID.startswith("2.25.")
    assert len(ds.StudyInstanceUID) <= 64
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert not any(element.tag.is_private for element in ds)
    # Re-runs agree byte for byte; a study keeps one UID across instances; another secret, other UIDs.
    assert anonymized(first, b"key-1") == out
    assert pydicom.dcmread(io.BytesIO(anonymized(second, b"key-1"))).StudyInstanceUID == ds.StudyInstanceUID
    assert pydicom.dcmread(io.BytesIO(anonymized(first, b"key-2"))).StudyInstanceUID != ds.StudyInstanceUID


@pytest.mark.parametrize("grey", [False, True])
def test_pixel_data_is_replaced_in_the_photo_layout(grey):
    def black_square(rgb):
        rgb = rgb.copy()
        rgb[4:12, 4:12] = 0
        return rgb

    ds = pydicom.dcmread(io.BytesIO(anonymized(dicom_photo(generate_uid(), grey=grey), b"k", black_square)))
    pixels = ds.pixel_array
    assert ds.PhotometricInterpretation == ("MONOCHROME2" if grey else "RGB")
    assert pixels.shape == ((32, 48) if grey else (32, 48, 3)) and (pixels[4:12, 4:12] == 0).all()
    assert pixels[20:, 20:].any()


def test_non_photographs_and_broken_files_are_refused():
    with pytest.raises(Rejected, match="not a photograph"):
        read_dicom(dicom_photo(generate_uid(), sop_class=CT_IMAGE))
    whole = dicom_photo(generate_uid())
    with pytest.raises(Rejected, match="corrupt dicom"):
        read_dicom(whole[:-500])  # pixel data cut short
    with pytest.raises(Rejected, match="DICOM|dicom"):
        read_dicom(whole[:200])  # header cut short
    assert SECONDARY_CAPTURE in PHOTO_CLASSES
