"""Write a synthetic hospital archive with Ray Data.

Layout under the root URI:
    photos/<patient_id>/<photo_id>.jpg|png   one file per photo (JPEG and PNG mixed)
    masks/<patient_id>/<photo_id>.png        lesion masks of tumour photos
    metadata/*.parquet                       one row per photo (schema.ARCHIVE_PHOTO)
    contact_sheet.png                        patients x conditions, for a person to look at
    samples.png                              photos as written, read back from the archive

Every file's key and bytes follow from the cohort seed, so a re-run rewrites the same files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray

from medeid import codecs, schema, storage
from medeid.synth import make_patient, photo_rows, render_row
from medeid.synth.cohort import photo_nuisance
from medeid.synth.conditions import PERIOCULAR_TUMOUR
from medeid.synth.contact_sheet import contact_sheet, image_grid

PHOTOS, MASKS, METADATA = "photos", "masks", "metadata"
CONTACT_SHEET, SAMPLES = "contact_sheet.png", "samples.png"
AGE_BANDS = (0, 18, 30, 45, 60, 75, 200)


def expand_patient(row: dict, *, cohort_seed: int, photos_per_patient: int) -> list[dict]:
    """Ray Data flat_map: a patient index -> that patient's photo rows."""
    index = int(row["id"])
    return photo_rows(make_patient(cohort_seed, index), cohort_seed, index, photos_per_patient)


def write_photos(batch: pa.Table, *, root: str, size: int, settings: storage.S3Settings | None = None) -> pa.Table:
    """Ray Data map_batches: render photo rows and write each image (and tumour mask) as a file.

    Reads the columns of `photo_rows`; returns `schema.ARCHIVE_PHOTO` rows. Stateless, one CPU.
    """
    fs, root_path = storage.filesystem(root, settings)

    def put(key: str, data: bytes) -> None:
        path = f"{root_path}/{key}"
        if not storage.is_s3(root):
            fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with fs.open_output_stream(path) as stream:
            stream.write(data)

    out = []
    for row in batch.to_pylist():
        rendered = render_row(row, size)
        data = codecs.encode(rendered.image, row["format"], jpeg_quality=photo_nuisance(row).jpeg_quality)
        photo_key = f"{PHOTOS}/{row['patient_id']}/{row['photo_id']}.{codecs.EXTENSIONS[row['format']]}"
        put(photo_key, data)
        mask_key = None
        if row["disease"] == PERIOCULAR_TUMOUR:
            mask_key = f"{MASKS}/{row['patient_id']}/{row['photo_id']}.png"
            put(mask_key, codecs.encode(rendered.lesion_mask, "png"))
        out.append({
            **{k: row[k] for k in ("photo_id", "patient_id", "photo_index", "age", "sex", "disease",
                                   "laterality", "severity", "findings", "cohort_seed", "patient_index")},
            "photo_key": photo_key, "mask_key": mask_key, "format": row["format"],
            "width": size, "height": size, "sha256": codecs.sha256(data), "n_bytes": len(data),
        })
    return pa.Table.from_pylist(out, schema=schema.ARCHIVE_PHOTO)


@dataclass(frozen=True)
class ArchiveResult:
    root: str
    requested: int
    written: int
    quarantined: int
    skipped: int
    metadata: pa.Table

    @property
    def reconciled(self) -> bool:
        return self.requested == self.written + self.quarantined + self.skipped


def build_archive(root: str, patients: int, photos_per_patient: int, size: int = 128, seed: int = 0,
                  settings: storage.S3Settings | None = None, contact_sheet_patients: int = 6) -> ArchiveResult:
    """Render and write a cohort of `patients` x `photos_per_patient` photos under `root`."""
    if patients < 1 or photos_per_patient < 1:
        raise ValueError("the archive needs at least one patient and one photo per patient")
    storage.check_reachable(root, settings)
    fs, root_path = storage.filesystem(root, settings)
    metadata_path = f"{root_path}/{METADATA}"

    # 1. Patients -> photo rows -> files written, one metadata row each.
    ds = (
        ray.data.range(patients, override_num_blocks=max(1, min(math.ceil(patients / 8), 200)))
        .flat_map(expand_patient, fn_kwargs={"cohort_seed": seed, "photos_per_patient": photos_per_patient})
        .map_batches(write_photos, fn_kwargs={"root": root, "size": size, "settings": settings},
                     batch_size=16, batch_format="pyarrow")
    )
    # 2. The metadata table; overwrite, so a re-run leaves one copy.
    ds.write_parquet(metadata_path, filesystem=fs, mode=ray.data.SaveMode.OVERWRITE)
    metadata = read_metadata(root, settings)
    # 3. Pictures for people: the world's conditions, and photos as they landed.
    storage.write_bytes(storage.join(root, CONTACT_SHEET),
                        codecs.encode(np.asarray(contact_sheet(contact_sheet_patients, size, seed)), "png"), settings)
    storage.write_bytes(storage.join(root, SAMPLES), codecs.encode(np.asarray(sample_grid(root, metadata, settings)),
                                                                   "png"), settings)
    requested = patients * photos_per_patient
    return ArchiveResult(root=root, requested=requested, written=metadata.num_rows, quarantined=0,
                         skipped=0, metadata=metadata)


PHOTOS_PER_BLOCK = 128  # metadata rows a Ray Data task takes: the decoding of their photos, one after another


def metadata_dataset(root: str, settings: storage.S3Settings | None = None,
                     columns: list[str] | None = None) -> ray.data.Dataset:
    """The archive's photo rows as a Ray Dataset in blocks of `PHOTOS_PER_BLOCK`. A parquet file is read
    by one task, and a map fused onto that read decoded every photo of the archive on one CPU (60 s of
    the demo's training pairs, 12 s of each archive read)."""
    fs, root_path = storage.filesystem(root, settings)
    return (ray.data.read_parquet(f"{root_path}/{METADATA}", filesystem=fs, columns=columns)
            .repartition(target_num_rows_per_block=PHOTOS_PER_BLOCK))


def read_metadata(root: str, settings: storage.S3Settings | None = None) -> pa.Table:
    fs, root_path = storage.filesystem(root, settings)
    table = pq.read_table(f"{root_path}/{METADATA}", filesystem=fs, schema=schema.ARCHIVE_PHOTO)
    return table.sort_by("photo_key")


def sample_grid(root: str, metadata: pa.Table, settings: storage.S3Settings | None = None, per_disease: int = 4):
    """Up to `per_disease` photos of each disease, read back from the archive."""
    rows_by_disease: dict[str, list[dict]] = {}
    for row in metadata.select(["photo_key", "patient_id", "disease", "laterality", "severity"]).to_pylist():
        picked = rows_by_disease.setdefault(row["disease"], [])
        if len(picked) < per_disease and all(r["patient_id"] != row["patient_id"] for r in picked):
            picked.append(row)
    diseases = sorted(rows_by_disease)
    size = int(metadata["width"][0].as_py())
    blank = np.full((size, size, 3), 255, dtype=np.uint8)
    grid = [[codecs.decode(storage.read_bytes(storage.join(root, r["photo_key"]), settings)) for r in rows_by_disease[d]]
            + [blank] * (per_disease - len(rows_by_disease[d])) for d in diseases]
    return image_grid(grid, diseases, [f"photo {i + 1}" for i in range(per_disease)])


def summarize(metadata: pa.Table) -> dict:
    """Counts a person checks first: photos, patients, and the label distributions."""
    def counts(column) -> dict:
        values = column.to_pylist()
        return {v: values.count(v) for v in sorted(set(values), key=str)}

    ages = metadata["age"].to_pylist()
    bands = {f"{lo}-{hi - 1}" if hi < 200 else f"{lo}+": sum(lo <= a < hi for a in ages)
             for lo, hi in zip(AGE_BANDS, AGE_BANDS[1:])}
    return {
        "photos": metadata.num_rows,
        "patients": len(set(metadata["patient_id"].to_pylist())),
        "disease": counts(metadata["disease"]),
        "sex": counts(metadata["sex"]),
        "age_band": bands,
        "format": counts(metadata["format"]),
        "masks": sum(k is not None for k in metadata["mask_key"].to_pylist()),
        "bytes": sum(metadata["n_bytes"].to_pylist()),
    }
