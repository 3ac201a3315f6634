"""Seals ride in every output format's metadata, survive a decode, and leave the pixels alone."""

import io
import os

import numpy as np
import pydicom
import pytest
from PIL import Image

from medeid.archive.carrier import attach, detach
from medeid.archive.formats import read_photo, write_photo
from medeid.synth.hospital_files import dicom_photo
from pydicom.uid import generate_uid

SEALS = [os.urandom(70_000), b"", os.urandom(123)]  # one larger than a JPEG segment holds


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "TIFF", "BMP", "WEBP"])
def test_seals_round_trip_and_the_photo_still_decodes_the_same(fmt):
    y, x = np.mgrid[:40, :56]
    rgb = np.dstack([x * 4, y * 6, (x + y) * 2]).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format=fmt)
    photo = read_photo(buffer.getvalue())
    plain = write_photo(photo, photo.rgb)
    carried = attach(plain, SEALS)
    assert detach(plain) == [] and detach(carried) == SEALS
    assert np.array_equal(read_photo(carried).rgb, read_photo(plain).rgb)
    assert carried[:4] == plain[:4]  # a JPEG's JFIF segment stays first, as readers expect


def test_a_dicom_carries_its_seals_in_a_private_block():
    data = dicom_photo(generate_uid())
    carried = attach(data, SEALS)
    assert detach(data) == [] and detach(carried) == SEALS
    assert np.array_equal(pydicom.dcmread(io.BytesIO(carried)).pixel_array,
                          pydicom.dcmread(io.BytesIO(data)).pixel_array)
