"""The sealed originals of an anonymized file, carried in the file itself, outside its pixels.

Pixels cannot carry them through JPEG's lossy coding or a grey file's one channel, so every format
gets a container its readers skip: a JPEG APP11 segment run, a private PNG chunk (`mdEd`: ancillary,
private, safe to copy), a private TIFF tag, a DICOM private block, a RIFF chunk at the end of a WebP
(`MDED`), and bytes after a BMP's pixel rows (which readers never reach: the header says where the
rows are and how many). Without the password the
payload is ciphertext (AES-GCM, `medeid.models.deid.payload`); a viewer shows the anonymized photo.

    data = attach(encoded_file, seals)      # after `formats.write_photo` / `dicom.write_dicom`
    seals = detach(data)                    # [] when the file carries none
"""

from __future__ import annotations

import io
import struct
import zlib

from medeid.archive.formats import sniff

JPEG_MARKER = b"\xff\xeb"  # APP11
JPEG_ID = b"MEDEID\x00"
JPEG_CHUNK = 65533 - len(JPEG_ID) - 4  # a segment's length field counts itself and is 16 bits
PNG_CHUNK = b"mdEd"
TIFF_TAG = 65261  # private range (>= 65000)
DICOM_GROUP, DICOM_CREATOR = 0x0099, "MEDEID"
WEBP_CHUNK = b"MDED"
BMP_TRAILER = b"MEDEID-SEALS"  # then the blob's length: the file ends with them


def pack(seals: list[bytes]) -> bytes:
    return struct.pack(">H", len(seals)) + b"".join(struct.pack(">I", len(s)) + s for s in seals)


def unpack(blob: bytes) -> list[bytes]:
    (count,), offset, seals = struct.unpack_from(">H", blob), 2, []
    for _ in range(count):
        (length,) = struct.unpack_from(">I", blob, offset)
        seals.append(blob[offset + 4:offset + 4 + length])
        offset += 4 + length
    return seals


def attach(data: bytes, seals: list[bytes]) -> bytes:
    """`data` (an encoded JPEG, PNG, TIFF or DICOM file) carrying `seals`."""
    blob, kind = pack(seals), sniff(data)
    if kind == "jpeg":
        parts = [blob[i:i + JPEG_CHUNK] for i in range(0, len(blob), JPEG_CHUNK)] or [b""]
        segments = b"".join(JPEG_MARKER + struct.pack(">H", 2 + len(JPEG_ID) + 4 + len(part)) + JPEG_ID
                            + struct.pack(">HH", i, len(parts)) + part for i, part in enumerate(parts))
        at = 2  # after SOI, and after the JFIF APP0 segment, which readers expect first
        if data[2:4] == b"\xff\xe0":
            at += 2 + struct.unpack_from(">H", data, 4)[0]
        return data[:at] + segments + data[at:]
    if kind == "png":
        chunk = struct.pack(">I", len(blob)) + PNG_CHUNK + blob + struct.pack(">I", zlib.crc32(PNG_CHUNK + blob))
        end = data.rindex(b"IEND") - 4  # before the IEND chunk's length field
        return data[:end] + chunk + data[end:]
    if kind == "tiff":  # re-encoded losslessly, as `formats.write_photo` wrote it, plus the tag
        from PIL import Image, TiffImagePlugin, TiffTags

        with Image.open(io.BytesIO(data)) as image:
            info = TiffImagePlugin.ImageFileDirectory_v2()
            info[TIFF_TAG] = blob
            info.tagtype[TIFF_TAG] = TiffTags.UNDEFINED
            options = {"icc_profile": image.info["icc_profile"]} if image.info.get("icc_profile") else {}
            out = io.BytesIO()
            image.save(out, format="TIFF", tiffinfo=info, compression="tiff_deflate", **options)
            return out.getvalue()
    if kind == "dicom":
        import pydicom

        dataset = pydicom.dcmread(io.BytesIO(data))
        dataset.private_block(DICOM_GROUP, DICOM_CREATOR, create=True).add_new(0x01, "OB", blob)
        out = io.BytesIO()
        dataset.save_as(out, enforce_file_format=True)
        return out.getvalue()
    if kind == "webp":
        chunk = WEBP_CHUNK + struct.pack("<I", len(blob)) + blob + b"\0" * (len(blob) & 1)
        body = data[8:] + chunk
        return b"RIFF" + struct.pack("<I", len(body)) + body
    if kind == "bmp":
        return data + blob + BMP_TRAILER + struct.pack(">I", len(blob))
    raise ValueError(f"cannot carry seals in {kind or 'unrecognised'} content")


def detach(data: bytes) -> list[bytes]:
    """The seals `attach` put into `data`; [] when it carries none."""
    kind = sniff(data)
    if kind == "jpeg":
        parts, offset = {}, 2
        while offset + 4 <= len(data) and data[offset] == 0xFF and data[offset + 1] not in (0xDA, 0xD9):
            (length,) = struct.unpack_from(">H", data, offset + 2)
            body = data[offset + 4:offset + 2 + length]
            if data[offset:offset + 2] == JPEG_MARKER and body.startswith(JPEG_ID):
                index, _ = struct.unpack_from(">HH", body, len(JPEG_ID))
                parts[index] = body[len(JPEG_ID) + 4:]
            offset += 2 + length
        return unpack(b"".join(parts[i] for i in sorted(parts))) if parts else []
    if kind == "png":
        offset = 8
        while offset + 8 <= len(data):
            length, name = struct.unpack_from(">I4s", data, offset)
            if name == PNG_CHUNK:
                return unpack(data[offset + 8:offset + 8 + length])
            offset += 12 + length
        return []
    if kind == "tiff":
        from PIL import Image

        with Image.open(io.BytesIO(data)) as image:
            blob = image.tag_v2.get(TIFF_TAG)
        return unpack(bytes(blob)) if blob else []
    if kind == "dicom":
        import pydicom

        dataset = pydicom.dcmread(io.BytesIO(data))
        try:
            return unpack(bytes(dataset.private_block(DICOM_GROUP, DICOM_CREATOR)[0x01].value))
        except KeyError:
            return []
    if kind == "webp":
        offset = 12
        while offset + 8 <= len(data):
            name, (length,) = data[offset:offset + 4], struct.unpack_from("<I", data, offset + 4)
            if name == WEBP_CHUNK:
                return unpack(data[offset + 8:offset + 8 + length])
            offset += 8 + length + (length & 1)
        return []
    if kind == "bmp" and data[-4 - len(BMP_TRAILER):-4] == BMP_TRAILER:
        (length,) = struct.unpack(">I", data[-4:])
        return unpack(data[-4 - len(BMP_TRAILER) - length:-4 - len(BMP_TRAILER)])
    return []
