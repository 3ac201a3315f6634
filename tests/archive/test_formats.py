"""Photo files: recognised by content, refused with a reason, written back alike without metadata."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from medeid.archive.formats import (MAX_PIXELS, TRANSPOSES, Rejected, displayed_points, read_photo, sniff,
                                   stored_pixels, write_photo)


def encoded(array: np.ndarray, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def face_like(h: int = 48, w: int = 64) -> np.ndarray:
    y, x = np.mgrid[:h, :w]
    return np.dstack([(x * 4) % 256, (y * 5) % 256, ((x + y) * 3) % 256]).astype(np.uint8)


def exif_with_gps_and_orientation(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation
    exif[0x010F] = "ClinicCam"  # Make
    exif.get_ifd(0x8825)[2] = (51.0, 30.0, 0.0)  # GPSLatitude
    return exif.tobytes()


def png_claiming(width: int, height: int) -> bytes:
    """A few bytes that claim a huge image: the shape of a decompression bomb."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("data, reason", [
    (b"", "empty file"),
    (b"patient list: Jane Doe, 1970-01-01\n", "not an image"),
    (b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4, "corrupt jpeg"),
    (png_claiming(100_000, 100_000), "too many pixels"),
])
def test_bad_files_are_refused_with_a_reason(data, reason):
    with pytest.raises(Rejected) as refused:
        read_photo(data)
    assert reason in refused.value.reason


def test_a_truncated_jpeg_and_an_animated_gif_are_refused():
    whole = encoded(face_like(), "JPEG")
    with pytest.raises(Rejected, match="corrupt jpeg"):
        read_photo(whole[: len(whole) // 2])
    frames = [Image.fromarray(face_like()), Image.fromarray(255 - face_like())]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    with pytest.raises(Rejected, match="unsupported format: gif"):
        read_photo(buffer.getvalue())


def test_format_comes_from_content_not_name():
    assert sniff(encoded(face_like(), "PNG")) == "png"
    assert sniff(encoded(face_like(), "TIFF")) == "tiff"
    assert sniff(b"\0" * 128 + b"DICM" + b"\0" * 16) == "dicom"
    assert read_photo(encoded(face_like(), "PNG")).format == "png"  # whatever the file is called


def test_jpeg_orientation_is_applied_and_exif_gps_comment_are_stripped_icc_kept():
    icc = b"\0\0\0\x18fake-icc-profile-bytes"
    data = encoded(face_like(), "JPEG", exif=exif_with_gps_and_orientation(6), comment=b"Jane Doe MRN 1234",
                   icc_profile=icc, quality=95)
    photo = read_photo(data)
    assert photo.rgb.shape == (64, 48, 3)  # orientation 6: rotated 90 degrees, as the camera meant
    out = write_photo(photo, photo.rgb)
    with Image.open(io.BytesIO(out)) as written:
        assert written.format == "JPEG" and written.size == (48, 64)
        assert not written.getexif() and "comment" not in written.info and "exif" not in written.info
        assert written.info.get("icc_profile") == icc
    assert b"Jane Doe" not in out and b"ClinicCam" not in out


@pytest.mark.parametrize("mode, fmt", [("L", "PNG"), ("L", "JPEG"), ("RGBA", "PNG"), ("LA", "PNG"),
                                       ("RGB", "TIFF"), ("CMYK", "JPEG"), ("P", "PNG"), ("RGB", "BMP"),
                                       ("L", "BMP"), ("P", "BMP"), ("RGB", "WEBP"), ("RGBA", "WEBP")])
def test_photos_come_back_in_their_own_format_and_layout(mode, fmt):
    source = Image.fromarray(face_like()).convert(mode)
    buffer = io.BytesIO()
    source.save(buffer, format=fmt)
    photo = read_photo(buffer.getvalue())
    assert photo.rgb.dtype == np.uint8 and photo.rgb.shape == (48, 64, 3)
    changed = photo.rgb.copy()
    changed[10:20, 10:20] = 0
    with Image.open(io.BytesIO(write_photo(photo, changed))) as written:
        assert written.format == fmt
        expected = {"CMYK": "RGB", "P": "RGB"}.get(mode, mode)  # colour spaces medeid does not write
        if fmt == "WEBP" and mode == "RGBA":
            expected = "RGB"  # libwebp drops an alpha channel that is opaque throughout, as this one is
        assert written.mode == expected
        assert np.asarray(written.convert("L"))[12, 12] < 8


def test_sixteen_bit_grey_keeps_untouched_samples_and_reads_back_changed_ones():
    samples = (np.arange(48 * 64).reshape(48, 64) * 21 % 65536).astype(np.uint16)
    photo = read_photo(encoded(samples, "PNG"))
    assert photo.samples16 is not None and photo.rgb[..., 0].tolist() == (samples >> 8).tolist()
    changed = photo.rgb.copy()
    changed[:8, :8] = 200
    with Image.open(io.BytesIO(write_photo(photo, changed))) as written:
        out = np.asarray(written)
    assert out.dtype == np.uint16 or written.mode.startswith("I")
    out = out.astype(np.uint16)
    assert (out[8:, 8:] == samples[8:, 8:]).all()  # full 16-bit depth where nothing changed
    assert ((out[:8, :8] >> 8) == 200).all()


def test_writing_is_deterministic_and_checks_the_shape():
    photo = read_photo(encoded(face_like(), "PNG"))
    assert write_photo(photo, photo.rgb) == write_photo(photo, photo.rgb.copy())
    with pytest.raises(ValueError, match="shape"):
        write_photo(photo, photo.rgb[:10])
    assert MAX_PIXELS >= 61_000_000  # the largest clinical camera sensors pass


def test_webp_stays_lossless_when_it_was_and_bmp_reads_back_exactly():
    pixels = face_like()
    for fmt, options in (("WEBP", {"lossless": True}), ("BMP", {})):
        photo = read_photo(encoded(pixels, fmt, **options))
        assert photo.format == fmt.lower() and np.array_equal(photo.rgb, pixels)
        assert np.array_equal(read_photo(write_photo(photo, pixels)).rgb, pixels)  # no generation lost
    lossy = read_photo(encoded(pixels, "WEBP", quality=80))
    assert not lossy.lossless and read_photo(encoded(pixels, "WEBP", lossless=True)).lossless


@pytest.mark.parametrize("data, name", [
    (b"\0\0\0\x18ftypheic" + b"\0" * 64, "heic"),
    (b"\0\0\0\x1cftypavif" + b"\0" * 64, "avif"),
    (b"\0\0\0\x0cjP  \r\n\x87\n" + b"\0" * 64, "jpeg2000"),
    (b"8BPS" + b"\0" * 64, "psd"),
])
def test_image_formats_medeid_does_not_anonymize_are_quarantined_by_name(data, name):
    with pytest.raises(Rejected, match=f"unsupported format: {name}") as refused:
        read_photo(data)
    assert refused.value.kind == "unsupported"


@pytest.mark.parametrize("orientation", sorted(TRANSPOSES))
def test_stored_pixels_and_displayed_points_undo_and_redo_the_exif_orientation(orientation):
    stored = np.random.default_rng(orientation).integers(0, 255, (30, 50, 3), np.uint8)
    data = encoded(stored, "PNG", exif=exif_with_gps_and_orientation(orientation))
    photo = read_photo(data)
    assert photo.orientation == orientation
    assert np.array_equal(stored_pixels(photo.rgb, orientation), stored)
    x, y = displayed_points(np.array([[7.5, 3.5]]), orientation, (50, 30))[0]  # the centre of stored pixel (7, 3)
    assert np.array_equal(photo.rgb[int(y), int(x)], stored[3, 7])
