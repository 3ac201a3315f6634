"""The identity index job's dataflow on a real local Ray and a real S3 server, with a real ONNX pack."""

import json
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from medeid import codecs, schema, storage
from medeid.models.export import export_recognizer_pack
from medeid.models.identity import PACK_METADATA, IdentityEmbedder
from medeid.models.identity_index import IdentityIndex
from medeid.models.recognizer import Recognizer
from medeid.pipelines.identity_index import (EMBEDDED_PHOTO, STAGE, PhotoEmbedder, build_identity_index,
                                             quarantine_uri)
from medeid.pipelines.synthetic_archive import build_archive, read_metadata

PATIENTS, PHOTOS = 4, 2


@pytest.fixture(scope="module")
def world(ray_session, s3, tmp_path_factory):
    """A tiny archive, and an untrained recogniser pack both on disk and on S3."""
    root = f"s3://w-{uuid.uuid4().hex[:12]}"
    storage.make_bucket(root, s3.settings)
    archive = build_archive(f"{root}/archive", PATIENTS, PHOTOS, size=64, seed=1)
    torch.manual_seed(0)
    local_pack = tmp_path_factory.mktemp("pack")
    export_recognizer_pack(Recognizer("resnet"), local_pack, {"match_threshold": 0.5})
    storage.copy_tree(str(local_pack), f"{root}/pack")
    return {"archive": archive.root, "pack": f"{root}/pack", "local_pack": local_pack,
            "metadata": archive.metadata}


def read_quarantine(output: str):
    fs, path = storage.filesystem(quarantine_uri(output))
    files = [f for f in storage.list_files(quarantine_uri(output)) if f.endswith(".parquet")]
    return pq.read_table(path, filesystem=fs, schema=schema.QUARANTINED_PHOTO).to_pylist() if files else []


def test_every_photo_is_indexed_and_finds_itself(world, bucket):
    output = f"{bucket}/index"
    result = build_identity_index(world["archive"], world["pack"], output, batch_size=3)
    assert result["reconciled"] and (result["inputs"], result["written"], result["quarantined"]) == (8, 8, 0)
    sha = json.loads((world["local_pack"] / PACK_METADATA).read_text())["onnx_sha256"]
    assert result["models"] == [sha]
    assert read_quarantine(output) == []

    index = IdentityIndex.from_uri(output)
    assert len(index) == PATIENTS * PHOTOS and index.dim == schema.IDENTITY_DIM and index.model == sha
    expected = dict(zip(*world["metadata"].select(["photo_key", "patient_id"]).to_pydict().values()))
    assert dict(zip(index.photo_keys.to_pylist(), index.patient_ids.to_pylist())) == expected
    norms = np.linalg.norm(index.embeddings.astype(np.float32), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-3)

    # Each photo, embedded again here, is its own row in the index up to float16 rounding.
    keys = index.photo_keys.to_pylist()
    images = [codecs.decode(storage.read_bytes(storage.join(world["archive"], key))) for key in keys]
    vectors = IdentityEmbedder(world["local_pack"]).embed(images).vectors
    own = np.einsum("nd,nd->n", vectors, index.embeddings.astype(np.float32))
    np.testing.assert_allclose(own, 1.0, atol=1e-3)
    similarity, rows = index.max_similarity(vectors)
    np.testing.assert_allclose(similarity, 1.0, atol=1e-3)
    # Even untrained, the recogniser puts other photos below 0.95 here, so the nearest row is the photo's own.
    assert rows.tolist() == list(range(len(keys)))


def test_the_embedder_stage_called_directly(world):
    stage = PhotoEmbedder(world["archive"], str(world["local_pack"]))
    rows = world["metadata"].select(["photo_key", "patient_id"]).slice(0, 3)
    batch = pa.concat_tables([rows, pa.table({"photo_key": ["photos/p/nowhere.jpg"], "patient_id": ["p"]},
                                             schema=rows.schema)])
    out = stage(batch)
    assert out.schema == EMBEDDED_PHOTO and out.num_rows == 4
    assert out["reason"].to_pylist() == [None, None, None, "missing: no file at the photo key"]
    assert out["embedding"].null_count == 1 and out["photo_key"].equals(batch["photo_key"])
    assert stage(batch.slice(0, 0)).num_rows == 0


def test_bad_photos_are_quarantined_with_reasons_and_a_rerun_replaces_both_outputs(world, bucket):
    archive, output = f"{bucket}/archive", f"{bucket}/index"
    storage.copy_tree(world["archive"], archive)
    first = build_identity_index(archive, world["pack"], output, batch_size=4)
    assert (first["written"], first["quarantined"]) == (8, 0)

    keys = world["metadata"]["photo_key"].to_pylist()
    corrupt, missing = keys[1], keys[6]
    storage.write_bytes(storage.join(archive, corrupt), b"not an image")
    fs, path = storage.filesystem(storage.join(archive, missing))
    fs.delete_file(path)

    again = build_identity_index(archive, world["pack"], output, batch_size=4)
    assert again["reconciled"] and (again["inputs"], again["written"], again["quarantined"]) == (8, 6, 2)
    held = {row["photo_key"]: row for row in read_quarantine(output)}
    assert set(held) == {corrupt, missing}
    assert held[corrupt]["reason"].startswith("undecodable: UnidentifiedImageError")
    assert held[missing]["reason"] == "missing: no file at the photo key"
    patients = dict(zip(keys, world["metadata"]["patient_id"].to_pylist()))
    assert all(row["stage"] == STAGE and row["patient_id"] == patients[key] for key, row in held.items())

    index = IdentityIndex.from_uri(output)
    assert sorted(index.photo_keys.to_pylist()) == sorted(set(keys) - {corrupt, missing})
    assert read_metadata(archive).num_rows == 8  # the archive itself is untouched but for the two files
