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

_CONDITION = [
    _field("sample_id", pa.string(), "stable id of the condition row: mema-<seed>-<index>"),
    _field("attempt", pa.int32(), "0 for the first generation of the row, 1.. for retries after a rejection"),
    _field("seed", pa.int64(), "generation seed of this attempt"),
    _field("age", pa.int32(), "conditioned age in years"),
    _field("sex", pa.string(), "female | male"),
    _field("disease", pa.string(), "conditioned disease (ARCHIVE_PHOTO's vocabulary)"),
    _field("laterality", pa.string(), "none | right | left | bilateral"),
    _field("severity", pa.int8(), "0 healthy, 1 mild, 2 moderate, 3 severe"),
    _field("findings", pa.list_(pa.string()), "fine-grained clinical findings"),
    _field("strategy", pa.string(), "txt2img | img2img | inpaint"),
]

# One row per condition MeMa was asked for (the requested distribution), written before generating.
MEMA_CONDITION = pa.schema([f for f in _CONDITION if f.name not in ("attempt", "strategy")] + [
    _field("source_key", pa.string(), "real photo an img2img or inpaint attempt starts from", nullable=True),
])

# One row per released MeMa image: the image, its labels and the figures the filters measured.
MEMA_IMAGE = pa.schema(_CONDITION + [
    _field("prompt", pa.string(), "the text condition the generator saw"),
    _field("source_key", pa.string(), "real photo an img2img or inpaint attempt started from", nullable=True),
    _field("generator_version", pa.string(), "sha256 prefix of the generator's weights"),
    _field("image", pa.binary(), "PNG"),
    _field("width", pa.int32(), "pixels"),
    _field("height", pa.int32(), "pixels"),
    _field("sharpness", pa.float32(), "variance of the Laplacian of the grey image (face-quality stage)"),
    # Which real patient that is stays out of a released table: the link itself would be a disclosure.
    _field("nearest_similarity", pa.float32(), "cosine to the nearest real patient photo (pipeline recogniser)"),
    _field("identity_threshold", pa.float32(), "the identity filter's threshold: match threshold minus margin"),
    _field("predicted_disease", pa.string(), "the medical classifier's disease for the image"),
    _field("disease_confidence", pa.float32(), "its probability"),
    _field("lesion_mask", pa.binary(), "MeMa-Seg: lesion mask PNG (255 on the lesion), made by the segmenter; "
                                       "null for non-tumour images", nullable=True),
    _field("mask_source", pa.string(), "who made the mask: segmenter:<model version>", nullable=True),
])

# One row per generated attempt a filter rejected: sampled = released + rejected.
# The MeMa build's verdict stages, in the order it applies them. `surplus`: an attempt that passed
# every filter after another attempt of its condition row, in the same round, already had.
MEMA_STAGES = ("quality", "identity", "plausibility", "surplus")

MEMA_REJECTION = pa.schema(_CONDITION + [
    _field("stage", pa.string(), " | ".join(MEMA_STAGES)),
    _field("reason", pa.string(), "why, in words"),
    _field("figure", pa.float32(), "the measured value the stage compared with its threshold", nullable=True),
    _field("threshold", pa.float32(), "the stage's threshold", nullable=True),
    _field("nearest_similarity", pa.float32(), "cosine to the nearest real patient, where measured", nullable=True),
])

# One row per released image, measured after the build by the held-out evaluator recogniser, which
# no filter used: the privacy audit the dataset card reports.
MEMA_AUDIT = pa.schema([
    _field("sample_id", pa.string(), "the released image"),
    _field("evaluator_similarity", pa.float32(), "cosine to the nearest real patient photo (evaluator)"),
    _field("evaluator_threshold", pa.float32(), "the evaluator's match threshold (open-set: max of per-pair and 1:N)"),
])

# One row per released image, measured after the build by the attackers that look at the eye band
# (`medeid.mema.attack_audit`). It names real photos, so it lives under the build's `private/`.
MEMA_ATTACKS = pa.schema([
    _field("sample_id", pa.string(), "the released image"),
    _field("periocular_similarity", pa.float32(), "cosine to the nearest real photo (periocular recogniser)"),
    _field("periocular_nearest_key", pa.string(), "that real photo's key in the archive"),
    _field("periocular_threshold", pa.float32(), "the periocular recogniser's threshold (FAR 1e-3 on real photos)"),
    _field("pixel_distance", pa.float32(), "mean absolute eye-band difference (0..255) to the nearest real photo"),
    _field("pixel_nearest_key", pa.string(), "that real photo's key in the archive"),
    _field("pixel_copy", pa.bool_(), "the eye band is a copy of that real photo's (distance below COPY_MAD)"),
])

# One row per input file and anonymization run (`jobs/anonymize_archive.py`); beside the output.
ARCHIVE_MANIFEST = pa.schema([
    _field("run_id", pa.string(), "the run that wrote this row"),
    _field("input_key", pa.string(), "input file, relative to the input prefix"),
    _field("input_sha256", pa.string(), "of the input bytes", nullable=True),
    _field("input_size", pa.int64(), "input bytes"),
    _field("status", pa.string(), "anonymized | no_face | quarantined | skipped"),
    _field("reason", pa.string(), "why quarantined or skipped, or what was done beyond the usual", nullable=True),
    _field("output_key", pa.string(), "output file, relative to the output prefix (same as input_key)", nullable=True),
    _field("output_sha256", pa.string(), "of the output bytes", nullable=True),
    _field("faces", pa.int32(), "faces found and replaced"),
    _field("recovery", pa.string(), "where the file's recovery data went: embedded | separate | none "
           "(medeid.archive.recovery); null when quarantined or skipped, and in rows older than the column",
           nullable=True),
    _field("model_version", pa.string(), "MedSem-DeID weights' sha256 prefix", nullable=True),
    _field("model_sha256", pa.string(), "MedSem-DeID weights' full sha256", nullable=True),
    _field("processed_at", pa.timestamp("us", tz="UTC"), "when the row was written"),
])

ALL = {"archive_photo": ARCHIVE_PHOTO, "identity_index": IDENTITY_INDEX, "quarantined_photo": QUARANTINED_PHOTO,
       "mema_condition": MEMA_CONDITION, "mema_image": MEMA_IMAGE, "mema_rejection": MEMA_REJECTION,
       "mema_audit": MEMA_AUDIT, "mema_attacks": MEMA_ATTACKS, "archive_manifest": ARCHIVE_MANIFEST}
