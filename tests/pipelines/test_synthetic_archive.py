"""The archive job's dataflow on a real local Ray and a real S3 server."""

import numpy as np
import pyarrow.parquet as pq
import pytest
import ray

from medeid import codecs, schema, storage
from medeid.pipelines.synthetic_archive import CONTACT_SHEET, METADATA, SAMPLES, build_archive, summarize
from medeid.synth import render_row
from medeid.synth.cohort import photo_nuisance
from medeid.synth.conditions import PERIOCULAR_TUMOUR

PATIENTS, PHOTOS, SIZE = 8, 3, 64


@pytest.fixture(scope="module")
def archive(ray_session, s3):
    name = "archive-module"
    storage.make_bucket(f"s3://{name}", s3.settings)
    root = f"s3://{name}/hospital"
    return build_archive(root, PATIENTS, PHOTOS, size=SIZE, seed=2)


def test_counts_reconcile(archive):
    assert archive.reconciled and archive.written == PATIENTS * PHOTOS
    summary = summarize(archive.metadata)
    assert summary["patients"] == PATIENTS and summary["photos"] == PATIENTS * PHOTOS
    assert sum(summary["disease"].values()) == PATIENTS * PHOTOS


def test_images_round_trip_through_s3_with_ray_data(archive):
    fs, path = storage.filesystem(storage.join(archive.root, "photos"))
    _, root_path = storage.filesystem(archive.root)
    images = ray.data.read_images(path, filesystem=fs, include_paths=True, mode="RGB").take_all()
    assert len(images) == PATIENTS * PHOTOS
    rows = {r["photo_key"]: r for r in archive.metadata.to_pylist()}
    for item in images:
        row = rows[storage.relative_key(root_path, item["path"])]
        rendered = render_row(row, SIZE).image
        # The file holds exactly the renderer's pixels, encoded at the photo's own JPEG quality.
        expected = codecs.decode(codecs.encode(rendered, row["format"], photo_nuisance(row).jpeg_quality))
        assert np.array_equal(item["image"], expected)
        if row["format"] == "png":
            assert np.array_equal(item["image"], rendered)
    files = storage.list_files(archive.root)
    assert {f.rsplit(".", 1)[1] for f in files if "/photos/" in f} == {"jpg", "png"}


def test_metadata_round_trips_with_its_schema(archive):
    fs, path = storage.filesystem(storage.join(archive.root, METADATA))
    rows = ray.data.read_parquet(path, filesystem=fs).take_all()
    assert len(rows) == PATIENTS * PHOTOS
    on_disk = pq.read_schema(fs.open_input_file(storage.list_files(storage.join(archive.root, METADATA))[0]
                                                .removeprefix("s3://")))
    assert on_disk.names == schema.ARCHIVE_PHOTO.names
    assert all(on_disk.field(n).type == schema.ARCHIVE_PHOTO.field(n).type for n in on_disk.names)
    for row in rows:
        data = storage.read_bytes(storage.join(archive.root, row["photo_key"]))
        assert codecs.sha256(data) == row["sha256"] and len(data) == row["n_bytes"]


def test_tumour_photos_and_only_they_have_masks(archive):
    rows = archive.metadata.to_pylist()
    assert any(r["disease"] == PERIOCULAR_TUMOUR for r in rows), "seed 2 should draw a tumour patient"
    for row in rows:
        assert (row["mask_key"] is not None) == (row["disease"] == PERIOCULAR_TUMOUR)
        if row["mask_key"]:
            mask = codecs.decode(storage.read_bytes(storage.join(archive.root, row["mask_key"])), "L") > 127
            assert np.array_equal(mask, render_row(row, SIZE).lesion_mask)


def test_pictures_for_people(archive):
    for name in (CONTACT_SHEET, SAMPLES):
        picture = codecs.decode(storage.read_bytes(storage.join(archive.root, name)))
        assert picture.shape[0] > SIZE and picture.shape[1] > 4 * SIZE
        assert picture.std() > 20  # not blank


def test_rerun_writes_nothing_twice(archive):
    again = build_archive(archive.root, PATIENTS, PHOTOS, size=SIZE, seed=2)
    assert again.written == archive.written
    assert again.metadata.column("sha256").to_pylist() == archive.metadata.column("sha256").to_pylist()
    assert len(storage.list_files(storage.join(archive.root, "photos"))) == PATIENTS * PHOTOS
