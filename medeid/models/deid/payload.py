"""The recovery data a de-identified photo carries: its original face, sealed under the password.

MedSem-DeID's ID-decryptor restores a photo from the photo itself and the password. What it needs
(the original pixels of the face footprint) travels inside the face's own pixels:

- `seal`: the original pixels, JPEG-compressed at the best quality that fits (4:4:4, so the eyes'
  colour survives), then encrypted and authenticated with AES-256-GCM under the password's key. The
  nonce is an HMAC of the key and the plaintext, so the same photo and password give the same
  bytes (re-runs agree byte for byte) and no nonce is ever reused for another plaintext.
- `embed` / `extract`: the sealed bytes in the lowest `BITS` bits of the face's interior pixels
  (at most +-3 grey levels: invisible, and nothing a recogniser or the medical model reacts to).
- `unseal`: authenticates before it decrypts, so a wrong password is detected for certain
  (`WrongPassword`) instead of decoding noise.

Without the key the carrier bits are indistinguishable from random: they reveal nothing about the
patient. They do not survive lossy re-encoding of the photo (JPEG); see the README.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import struct

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from PIL import Image

MAGIC = b"MDR1"  # medeid recovery data, version 1
HEADER = struct.Struct(">4sI")  # magic, sealed length
NONCE_BYTES, TAG_BYTES = 12, 16
BITS = 2  # low bits of each carrier value
QUALITIES = (95, 92, 90, 85, 80, 75, 70, 60, 50)  # tried in turn until the sealed data fits
FACE_MAGIC = b"MDF1"  # one face's recovery data carried outside the pixels (`seal_face`)
FACE_HEADER = struct.Struct(">II10d")  # footprint box origin (row, column), five (x, y) landmarks


class WrongPassword(ValueError):
    """The recovery data did not authenticate: another password sealed it (or it was altered)."""


class NoRecoveryData(ValueError):
    """The image carries no medeid recovery data (never de-identified, or re-encoded since)."""


def capacity(carrier_values: int, bits: int = BITS) -> int:
    """Sealed bytes that fit in `carrier_values` uint8 values, header included."""
    return carrier_values * bits // 8 - HEADER.size


def _compress(pixels: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=quality, subsampling=0, optimize=True)
    return buffer.getvalue()


def _encrypt(plaintext: bytes, cipher_key: bytes, context: bytes) -> bytes:
    nonce = hmac.new(cipher_key, b"nonce\x00" + plaintext, hashlib.sha256).digest()[:NONCE_BYTES]
    return nonce + AESGCM(cipher_key).encrypt(nonce, plaintext, context)


def _decrypt(sealed: bytes, cipher_key: bytes, context: bytes) -> bytes:
    nonce, ciphertext = sealed[:NONCE_BYTES], sealed[NONCE_BYTES:]
    try:
        return AESGCM(cipher_key).decrypt(nonce, ciphertext, context)
    except InvalidTag:
        raise WrongPassword("wrong password: the recovery data does not open with it") from None


def seal(original: np.ndarray, cipher_key: bytes, max_bytes: int) -> tuple[bytes, int]:
    """The sealed original (uint8 RGB) in at most `max_bytes`, and the JPEG quality used."""
    for quality in QUALITIES:
        plaintext = _compress(original, quality)
        if len(plaintext) + NONCE_BYTES + TAG_BYTES <= max_bytes:
            return _encrypt(plaintext, cipher_key, MAGIC), quality
    raise ValueError(f"the face is too small to carry its own recovery data: {original.shape[1]} x "
                     f"{original.shape[0]} px need more than {max_bytes} bytes even at JPEG quality "
                     f"{QUALITIES[-1]}; de-identify at a higher resolution")


def unseal(sealed: bytes, cipher_key: bytes) -> np.ndarray:
    """The original pixels, or `WrongPassword`."""
    return np.asarray(Image.open(io.BytesIO(_decrypt(sealed, cipher_key, MAGIC))).convert("RGB"))


def seal_face(original: np.ndarray, origin: tuple[int, int], landmarks: np.ndarray | None, cipher_key: bytes) -> bytes:
    """One face's recovery data for a carrier outside the pixels: where its footprint's box starts
    (row, column), the landmarks it was cropped by (NaN: the central square), and the box's original
    pixels, lossless (PNG: JPEG at quality 95 cost some faces' fine texture, SSIM 0.92; outside the
    pixels there is room), all sealed. Without the password even the face's position is hidden."""
    marks = np.full((5, 2), np.nan) if landmarks is None else np.asarray(landmarks, np.float64)
    header = FACE_HEADER.pack(*origin, *marks.reshape(-1))
    buffer = io.BytesIO()
    Image.fromarray(original).save(buffer, "PNG", compress_level=6)
    return _encrypt(header + buffer.getvalue(), cipher_key, FACE_MAGIC)


def unseal_face(sealed: bytes, cipher_key: bytes) -> tuple[np.ndarray, tuple[int, int], np.ndarray | None]:
    """`seal_face` opened: (pixels, origin, landmarks or None), or `WrongPassword`."""
    plaintext = _decrypt(sealed, cipher_key, FACE_MAGIC)
    row, col, *marks = FACE_HEADER.unpack_from(plaintext)
    landmarks = np.array(marks).reshape(5, 2)
    pixels = np.asarray(Image.open(io.BytesIO(plaintext[FACE_HEADER.size:])).convert("RGB"))
    return pixels, (row, col), None if np.isnan(landmarks).all() else landmarks


def embed(values: np.ndarray, sealed: bytes, bits: int = BITS) -> np.ndarray:
    """`values` (uint8, flat) with `sealed` and its header written into their low `bits` bits."""
    data = HEADER.pack(MAGIC, len(sealed)) + sealed
    if len(data) * 8 > len(values) * bits:
        raise ValueError(f"{len(data)} bytes do not fit in {len(values)} carrier values")
    symbols = np.unpackbits(np.frombuffer(data, np.uint8)).reshape(-1, bits)
    symbols = (symbols * (1 << np.arange(bits - 1, -1, -1, dtype=np.uint8))).sum(1).astype(np.uint8)
    out = values.copy()
    low = np.uint8((1 << bits) - 1)
    out[:len(symbols)] = (out[:len(symbols)] & ~low) | symbols
    return out


def extract(values: np.ndarray, bits: int = BITS) -> bytes:
    """The sealed bytes `embed` wrote into `values`, or `NoRecoveryData`."""
    low = values & np.uint8((1 << bits) - 1)
    stream = np.unpackbits(low[:, None], axis=1)[:, 8 - bits:].reshape(-1)
    usable = len(stream) // 8 * 8
    data = np.packbits(stream[:usable]).tobytes()
    magic, length = HEADER.unpack_from(data) if len(data) >= HEADER.size else (b"", 0)
    if magic != MAGIC or HEADER.size + length > len(data):
        raise NoRecoveryData("this image carries no medeid recovery data: it was not de-identified by "
                             "medeid, or it was re-encoded (e.g. saved as JPEG) after de-identification")
    return data[HEADER.size:HEADER.size + length]
