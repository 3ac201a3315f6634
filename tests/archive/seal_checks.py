"""Whether a file holds any recovery data: a container of ours in its format's metadata, or a run of
a seal's bytes anywhere in it. Used by the archive's and the endpoint's tests of the modes that
promise a shared file with nothing recoverable in it."""

import io
import struct

import pydicom
from PIL import Image

from medeid.archive import carrier
from medeid.archive.formats import sniff

PNG_STANDARD_CHUNKS = {b"IHDR", b"PLTE", b"IDAT", b"IEND", b"iCCP", b"tRNS", b"pHYs", b"gAMA", b"cHRM", b"sRGB"}
WINDOW = 24  # bytes of a seal (AES-GCM output: random-looking) that cannot turn up by chance


def jpeg_markers(data: bytes) -> list[int]:
    """The second byte of every marker segment before the scan (0xE0 APP0 ... 0xEF APP15)."""
    markers, offset = [], 2
    while offset + 4 <= len(data) and data[offset] == 0xFF and data[offset + 1] not in (0xDA, 0xD9):
        markers.append(data[offset + 1])
        offset += 2 + struct.unpack_from(">H", data, offset + 2)[0]
    return markers


def png_chunks(data: bytes) -> list[bytes]:
    chunks, offset = [], 8
    while offset + 8 <= len(data):
        (length,) = struct.unpack_from(">I", data, offset)
        chunks.append(data[offset + 4:offset + 8])
        offset += 12 + length
    return chunks


def seal_traces(data: bytes, seals: list[bytes] = ()) -> list[str]:
    """Every trace of recovery data in `data`; [] for a file that holds none."""
    traces, kind = [], sniff(data)
    if carrier.detach(data):
        traces.append("the carrier finds seals")
    if kind == "jpeg":
        extra = [hex(m) for m in jpeg_markers(data) if 0xE0 <= m <= 0xEF and m not in (0xE0, 0xE2)]
        traces += [f"JPEG APP segment {m} (only JFIF APP0 and ICC APP2 are written)" for m in extra]
        traces += ["a MEDEID segment id"] * (carrier.JPEG_ID in data)
    elif kind == "png":
        traces += [f"PNG chunk {c!r}" for c in png_chunks(data) if c not in PNG_STANDARD_CHUNKS]
    elif kind == "tiff":
        with Image.open(io.BytesIO(data)) as image:
            traces += [f"private TIFF tag {t}" for t in image.tag_v2 if t >= 32768]
    elif kind == "dicom":
        dataset = pydicom.dcmread(io.BytesIO(data))
        traces += [f"private DICOM element {e.tag}" for e in dataset.iterall() if e.tag.is_private]
    for n, seal in enumerate(seals):
        step = max(1, (len(seal) - WINDOW) // 16)
        if any(seal[at:at + WINDOW] in data for at in range(0, max(1, len(seal) - WINDOW), step)):
            traces.append(f"bytes of seal {n}")
    return traces
