"""Arrow schemas of every table medeid writes, so jobs that write and jobs that read agree.

Keys inside tables are relative to the dataset's root URI, so a dataset can be copied or moved.
"""

from __future__ import annotations

import pyarrow as pa


def _field(name: str, type_: pa.DataType, doc: str, nullable: bool = False) -> pa.Field:
    return pa.field(name, type_, nullable=nullable, metadata={"doc": doc})


# One row per photo of a (synthetic or real) hospital archive.
ARCHIVE_PHOTO = pa.schema([
    _field("photo_key", pa.string(), "image file, relative to the archive root"),
    _field("photo_id", pa.string(), "unique photo id"),
    _field("patient_id", pa.string(), "unique patient id; all photos of one person share it"),
    _field("photo_index", pa.int32(), "index of the photo among the patient's photos"),
    _field("age", pa.int32(), "age in years at the photo"),
    _field("sex", pa.string(), "female | male"),
    _field("disease", pa.string(), "healthy | ptosis | thyroid_eye_disease | strabismus | conjunctival_redness"
                                   " | periocular_tumour"),
    _field("laterality", pa.string(), "none | right | left | bilateral (the patient's side)"),
    _field("severity", pa.int8(), "0 healthy, 1 mild, 2 moderate, 3 severe"),
    _field("findings", pa.list_(pa.string()), "fine-grained clinical findings"),
    _field("mask_key", pa.string(), "lesion mask PNG (255 on the lesion), relative to the root; null if none",
           nullable=True),
    _field("format", pa.string(), "jpeg | png"),
    _field("width", pa.int32(), "pixels"),
    _field("height", pa.int32(), "pixels"),
    _field("sha256", pa.string(), "sha256 of the image file"),
    _field("n_bytes", pa.int64(), "size of the image file"),
    _field("cohort_seed", pa.int64(), "synthetic world: the cohort's seed (re-renders the photo)", nullable=True),
    _field("patient_index", pa.int64(), "synthetic world: the patient's index in the cohort", nullable=True),
])

# ArcFace's embedding size, which both of medeid's recogniser architectures share.
IDENTITY_DIM = 512

# One row per real patient photo in the identity index: the faces no synthetic image may resemble.
# The embedding is a fixed-size list, not a list: all rows have one length, so Arrow stores the
# values back to back with no offsets, the column turns into an (N, 512) matrix without a copy,
# and a vector of the wrong length fails when written, not when compared. float16 halves a
# million-row index to 1 GiB and moves a cosine by at most ~5e-4.
IDENTITY_INDEX = pa.schema([
    _field("photo_key", pa.string(), "image file, relative to the archive root"),
    _field("patient_id", pa.string(), "the real patient the face belongs to"),
    _field("embedding", pa.list_(pa.float16(), IDENTITY_DIM), "L2-normalised identity embedding"),
    _field("model", pa.string(), "the recogniser: its ONNX file's sha256"),
])

# One row per input a job set aside instead of writing: the reason says why, the stage where.
QUARANTINED_PHOTO = pa.schema([
    _field("photo_key", pa.string(), "image file, relative to the archive root"),
    _field("patient_id", pa.string(), "patient id from the archive metadata", nullable=True),
    _field("stage", pa.string(), "the stage that set the photo aside"),
    _field("reason", pa.string(), "why, in words a person can act on"),
])

ALL = {"archive_photo": ARCHIVE_PHOTO, "identity_index": IDENTITY_INDEX, "quarantined_photo": QUARANTINED_PHOTO}
