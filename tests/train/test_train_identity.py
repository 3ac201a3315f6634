"""Recogniser training on Ray Train: DDP on two workers, checkpoints on S3, recovery, export."""

import json

import numpy as np
import pytest

from medeid import storage
from medeid.config import RecognizerConfig
from medeid.models.identity import IdentityEmbedder
from medeid.pipelines.synthetic_archive import build_archive
from medeid.synth import render_row
from medeid.train.data import split_of
from medeid.train.identity import train_recognizer


@pytest.fixture(scope="module")
def archive(ray_session, s3):
    storage.make_bucket("s3://identity-train", s3.settings)
    return build_archive("s3://identity-train/archive", 60, 3, size=64, seed=4).root


def test_interrupted_training_resumes_from_its_checkpoint(archive, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDEID_CACHE", str(tmp_path / "cache"))
    cfg = RecognizerConfig(epochs=2, batch_size=16, far=1e-2, eval_every=1)
    figures = train_recognizer(
        archive, "s3://identity-train/packs/recognizer", "s3://identity-train/runs", "identity-test", cfg,
        fail_after_epoch=0)
    # The injected failure came after epoch 0's checkpoint: the replacement workers started at epoch 1
    # and carried on the step counter instead of starting again.
    assert figures["start_epoch"] == 1 and figures["final_epoch"] == 1
    photos = sum(split_of(f"P{i:06d}") == "train" for i in range(60)) * 3
    assert figures["steps"] == 2 * ((photos // 2) // 16)  # two epochs of whole batches on equal shards
    assert storage.list_files(storage.join("s3://identity-train/runs", "identity-test"))  # checkpoints on S3

    embedder = IdentityEmbedder.from_uri(figures["pack"])
    meta = json.loads((embedder.pack_dir / "pack.json").read_text())
    assert meta["match_threshold"] == figures["match_threshold"] and 0 <= meta["tar"] <= 1
    assert meta["far"] == 1e-2 and meta["test_patients"] > 0
    face = render_row({"cohort_seed": 4, "patient_index": 0, "photo_index": 0, "age": 40, "sex": "female",
                       "disease": "healthy"}, 128).image
    assert np.isclose(np.linalg.norm(embedder.embed([face]).vectors[0]), 1, atol=1e-5)
