"""Labelled archive photos as Ray Data datasets, split by patient so held-out people stay unseen."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import ray

from medeid import codecs, storage
from medeid.models.identity import centred_crop
from medeid.pipelines.synthetic_archive import metadata_dataset, read_metadata
from medeid.synth.conditions import DISEASES, LATERALITIES

SPLITS = ("train", "test")


def split_of(patient_id: str, held_out: float = 0.2, salt: str = "medeid") -> str:
    """'test' for a stable `held_out` fraction of patients, 'train' for the rest."""
    digest = hashlib.sha256(f"{salt}:{patient_id}".encode()).digest()
    return "test" if int.from_bytes(digest[:8], "big") / 2**64 < held_out else "train"


def load_photos(batch: pa.Table, *, root: str, size: int, with_masks: bool,
                classes: dict[str, int] | None = None, settings: storage.S3Settings | None = None) -> dict:
    """Ray Data map_batches: metadata rows -> decoded, centre-cropped images and integer labels.

    Writes: image (N, size, size, 3) uint8, patient_id, photo_id, label (index in `classes`, -1 if absent),
    disease, laterality, severity (int64), and mask (N, size, size) uint8 when `with_masks`.
    """
    rows = batch.to_pylist()
    images, masks = [], []
    for row in rows:
        images.append(centred_crop(codecs.decode(storage.read_bytes(storage.join(root, row["photo_key"]), settings)),
                                   size))
        if with_masks:
            if row["mask_key"]:
                mask = codecs.decode(storage.read_bytes(storage.join(root, row["mask_key"]), settings), "L")
                masks.append((centred_crop(mask, size) > 127).astype(np.uint8))
            else:
                masks.append(np.zeros((size, size), np.uint8))
    out = {
        "image": np.stack(images),
        "patient_id": np.array([r["patient_id"] for r in rows]),
        "photo_id": np.array([r["photo_id"] for r in rows]),
        "label": np.array([(classes or {}).get(r["patient_id"], -1) for r in rows], dtype=np.int64),
        "disease": np.array([DISEASES.index(r["disease"]) for r in rows], dtype=np.int64),
        "laterality": np.array([LATERALITIES.index(r["laterality"]) for r in rows], dtype=np.int64),
        "severity": np.array([r["severity"] for r in rows], dtype=np.int64),
    }
    if with_masks:
        out["mask"] = np.stack(masks)
    return out


def archive_dataset(root: str, split: str, size: int, with_masks: bool = False,
                    classes: dict[str, int] | None = None, settings: storage.S3Settings | None = None,
                    held_out: float = 0.2) -> ray.data.Dataset:
    """The photos of one split of an archive, decoded at `size` x `size`."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return (
        metadata_dataset(root, settings)
        .filter(lambda row: split_of(row["patient_id"], held_out) == split)
        .map_batches(load_photos, batch_size=64, batch_format="pyarrow",
                     fn_kwargs={"root": root, "size": size, "with_masks": with_masks, "classes": classes,
                                "settings": settings})
    )


def patient_ids_by_split(root: str, held_out: float = 0.2,
                         settings: storage.S3Settings | None = None) -> dict[str, list[str]]:
    """Each split's photos as their patient ids (one entry a photo), from the archive's metadata."""
    by_split = {split: [] for split in SPLITS}
    for patient in read_metadata(root, settings).column("patient_id").to_pylist():
        by_split[split_of(patient, held_out)].append(patient)
    return by_split
