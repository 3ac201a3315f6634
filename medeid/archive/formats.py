"""Photo files in and out of the archive job: recognise, validate, decode, and write back alike.

`read_photo` turns a file's bytes (JPEG, PNG, TIFF, BMP, WebP) into what MedSem-DeID works on, an
(H, W, 3) uint8 RGB array with the EXIF orientation applied (the tag is kept in `Photo.orientation`:
`stored_pixels` and `displayed_points` undo and redo it), or raises `Rejected` with the reason the
file goes to quarantine: empty, not an image, a format medeid does not anonymize, animated, too many
pixels (a decompression bomb is refused from its header, before any decoding), corrupt or truncated.

`write_photo` encodes the anonymized pixels in the file's own format and sample layout (grey stays
grey, 16-bit PNG stays 16-bit, an alpha channel is kept) from a fresh array, so nothing of the
original's metadata comes along: no EXIF (GPS, camera serials, dates), XMP, IPTC, comments or text
chunks. The ICC profile is the one thing kept, where the colour space is unchanged, because without
it the colours change meaning.

The format is recognised from the content, never from the name: a text file called `.jpg` is not
an image, and a PNG called `.jpg` is a PNG.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Formats whose photos are anonymized, by Pillow's name. DICOM is recognised here and handled by
# its own module (pixel data and header).
IMAGE_FORMATS = {"JPEG": "jpeg", "PNG": "png", "TIFF": "tiff", "BMP": "bmp", "WEBP": "webp"}
DICOM = "dicom"
# 100 megapixels: above every clinical camera (a 61 MP full-frame sensor is the largest in use),
# far below what a few kilobytes of a crafted PNG can claim.
MAX_PIXELS = 100_000_000
SIXTEEN_BIT_GREY = ("I;16", "I;16B", "I;16L", "I")
JPEG_QUALITY = 95  # re-encoding a JPEG costs a generation; keep it a small one
# A restored photo is a one-off for a clinician: near-lossless (one more generation at 95 cost some
# faces' texture, SSIM 0.95 against the original).
RESTORED_JPEG_QUALITY = 100


# What kind of trouble a rejected file is in: the serving endpoint answers each with its own 4xx.
EMPTY, NOT_AN_IMAGE, UNSUPPORTED, TOO_LARGE, CORRUPT = "empty", "not_an_image", "unsupported", "too_large", "corrupt"


class Rejected(ValueError):
    """A file the job cannot anonymize: it goes to quarantine with `reason`; `kind` sorts it."""

    def __init__(self, reason: str, kind: str):
        super().__init__(reason)
        self.reason, self.kind = reason, kind


@dataclass(frozen=True)
class Photo:
    """A decoded photo: `rgb` for the models, and what writing it back alike needs."""

    rgb: np.ndarray  # (H, W, 3) uint8, orientation applied
    format: str  # "jpeg" | "png" | "tiff" | "bmp" | "webp"
    mode: str  # Pillow's mode of the file: RGB, L, I;16, RGBA, LA, CMYK, P...
    alpha: np.ndarray | None = None  # (H, W) alpha samples, for RGBA/LA files
    samples16: np.ndarray | None = None  # 16-bit grey files: the original samples, (H, W)
    icc_profile: bytes | None = None
    orientation: int = 1  # the file's EXIF orientation (1-8), already applied to `rgb`
    lossless: bool = False  # WebP: written back lossless when the file was


def sniff(data: bytes) -> str | None:
    """The format of file content by its signature: 'jpeg', 'png', 'tiff', 'dicom', 'gif', or None."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if data[128:132] == b"DICM":  # the DICOM file preamble is 128 bytes, then the magic
        return DICOM
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:2] == b"BM" and len(data) >= 26:
        return "bmp"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    # Recognised only to be quarantined by name (`unsupported format: heic`), not as "not an image".
    if data[4:8] == b"ftyp" and data[8:12] in (b"heic", b"heix", b"mif1", b"msf1", b"avif"):
        return "avif" if data[8:12] == b"avif" else "heic"
    if data[:12] == b"\x00\x00\x00\x0cjP  \r\n\x87\n" or data[:4] == b"\xff\x4f\xff\x51":
        return "jpeg2000"
    if data[:4] == b"8BPS":
        return "psd"
    return None


def read_photo(data: bytes, max_pixels: int = MAX_PIXELS) -> Photo:
    """Decode a JPEG, PNG, TIFF, BMP or WebP photo; raises `Rejected` (with the quarantine reason) otherwise."""
    if not data:
        raise Rejected("empty file", EMPTY)
    kind = sniff(data)
    if kind is None:
        raise Rejected("not an image (unrecognised content)", NOT_AN_IMAGE)
    if kind == DICOM:
        raise Rejected("DICOM: read by medeid.archive.dicom, not as a photo", UNSUPPORTED)
    if kind not in IMAGE_FORMATS.values():
        raise Rejected(f"unsupported format: {kind}", UNSUPPORTED)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))  # reads the header only
            width, height = image.size
            if width * height > max_pixels:
                raise Rejected(f"too many pixels: {width} x {height} (limit {max_pixels:,}; a decompression bomb?)", TOO_LARGE)
            if getattr(image, "n_frames", 1) > 1:
                raise Rejected(f"unsupported: {image.n_frames} frames (animated or multi-page)", UNSUPPORTED)
            image.load()
            return _photo(image, IMAGE_FORMATS[image.format], kind == "webp" and _webp_lossless(data))
    except Rejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise Rejected(f"too many pixels: {error}", TOO_LARGE) from None
    except UnidentifiedImageError:
        raise Rejected(f"corrupt {kind}: Pillow cannot identify it", CORRUPT) from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        # Pillow reports truncated and malformed streams as OSError/SyntaxError/ValueError.
        raise Rejected(f"corrupt {kind}: {error}", CORRUPT) from None


def _webp_lossless(data: bytes) -> bool:
    """Whether a WebP file's image chunk is VP8L (lossless) rather than VP8 (lossy)."""
    at = 12
    while at + 8 <= len(data):
        chunk, size = data[at:at + 4], int.from_bytes(data[at + 4:at + 8], "little")
        if chunk in (b"VP8 ", b"VP8L"):
            return chunk == b"VP8L"
        at += 8 + size + (size & 1)  # RIFF chunks are padded to even sizes
    return False


def _photo(image: Image.Image, fmt: str, lossless: bool = False) -> Photo:
    icc = image.info.get("icc_profile") or None
    mode = image.mode
    orientation = image.getexif().get(ORIENTATION_TAG, 1)
    orientation = orientation if orientation in TRANSPOSES else 1
    image = ImageOps.exif_transpose(image)  # what the camera meant is what gets anonymized
    alpha = samples16 = None
    if mode in SIXTEEN_BIT_GREY:  # Pillow reads 16-bit colour PNGs at 8 bits: those arrive as RGB
        samples16 = np.clip(np.asarray(image), 0, 65535).astype(np.uint16)
        rgb = np.repeat((samples16 >> 8).astype(np.uint8)[..., None], 3, axis=2)
    elif mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        converted = image.convert("RGBA")
        alpha = np.asarray(converted)[..., 3].copy()
        rgb = np.asarray(converted.convert("RGB"))
    else:
        rgb = np.asarray(image.convert("RGB"))
    if mode not in ("RGB", "RGBA", "L", "LA"):
        icc = None  # the colour space changed (CMYK, palette...): its profile no longer applies
    return Photo(np.ascontiguousarray(rgb), fmt, mode, alpha, samples16, icc, orientation, lossless)


def write_photo(photo: Photo, rgb: np.ndarray, jpeg_quality: int = JPEG_QUALITY) -> bytes:
    """Encode anonymized pixels `rgb` (H, W, 3) uint8 in `photo`'s format and sample layout, with no
    metadata but the ICC profile. Deterministic: the same pixels give the same bytes."""
    if rgb.shape != photo.rgb.shape or rgb.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels of shape {photo.rgb.shape}, got {rgb.dtype} {rgb.shape}")
    image = _layout_like(photo, rgb)
    options: dict = {"icc_profile": photo.icc_profile} if photo.icc_profile else {}
    if photo.format == "jpeg":
        options.update(quality=jpeg_quality, subsampling=0, optimize=False)
    elif photo.format == "png":
        options.update(compress_level=6)
    elif photo.format == "tiff":
        options.update(compression="tiff_deflate")
    elif photo.format == "webp":
        options.update({"lossless": True} if photo.lossless else {"quality": jpeg_quality, "method": 4})
    elif photo.format == "bmp":
        options.pop("icc_profile", None)  # Pillow writes no profile into a BMP
    buffer = io.BytesIO()
    image.save(buffer, format=photo.format.upper(), **options)
    return buffer.getvalue()


def _layout_like(photo: Photo, rgb: np.ndarray) -> Image.Image:
    grey = photo.mode in ("L", "LA", "1", *SIXTEEN_BIT_GREY)
    if photo.samples16 is not None:
        # Where the pixels were left alone the file keeps its full 16-bit samples; where they
        # changed, the 8-bit value fills both bytes (v * 257), so >> 8 reads it back exactly.
        now = _grey(rgb)
        changed = now != (photo.samples16 >> 8).astype(np.uint8)
        return Image.fromarray(np.where(changed, now.astype(np.uint16) * 257, photo.samples16).astype(np.uint16))
    if photo.alpha is not None:
        if grey:
            return Image.merge("LA", [Image.fromarray(_grey(rgb)), Image.fromarray(photo.alpha)])
        return Image.fromarray(np.dstack([rgb, photo.alpha]))
    # Pillow picks the mode from the array: (H, W) uint8 is L, (H, W, 3) RGB, (H, W) uint16 I;16.
    return Image.fromarray(_grey(rgb) if grey else rgb)


def _grey(rgb: np.ndarray) -> np.ndarray:
    """Back to one channel: a grey photo's pixels came in as three equal channels."""
    return rgb.mean(axis=2).round().astype(np.uint8)


# EXIF orientation: how the viewer turns the stored pixels (Pillow's transposes, as `exif_transpose`).
ORIENTATION_TAG = 0x0112
_T = Image.Transpose
TRANSPOSES = {1: None, 2: _T.FLIP_LEFT_RIGHT, 3: _T.ROTATE_180, 4: _T.FLIP_TOP_BOTTOM, 5: _T.TRANSPOSE,
              6: _T.ROTATE_270, 7: _T.TRANSVERSE, 8: _T.ROTATE_90}
_UNDO = {**{o: t for o, t in TRANSPOSES.items() if t is not None}, 6: _T.ROTATE_90, 8: _T.ROTATE_270}


def stored_pixels(rgb: np.ndarray, orientation: int) -> np.ndarray:
    """A displayed photo's pixels as the file stores them: its EXIF orientation undone."""
    if orientation not in _UNDO:
        return rgb
    return np.asarray(Image.fromarray(rgb).transpose(_UNDO[orientation]))


def displayed_points(points: np.ndarray, orientation: int, stored_size: tuple[int, int]) -> np.ndarray:
    """(N, 2) x, y points of the stored pixels (`stored_size` = width, height), where the viewer shows
    them once it applies the EXIF orientation (continuous pixel coordinates: edges at 0 and W)."""
    w, h = stored_size
    x, y = np.asarray(points, np.float64)[..., 0], np.asarray(points, np.float64)[..., 1]
    mapped = {1: (x, y), 2: (w - x, y), 3: (w - x, h - y), 4: (x, h - y), 5: (y, x),
              6: (h - y, x), 7: (h - y, w - x), 8: (y, w - x)}[orientation if orientation in TRANSPOSES else 1]
    return np.stack(mapped, axis=-1).astype(np.float32)
