"""Prompts, the three generation strategies and the MeMa stages, called directly (no Ray)."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from medeid import codecs, schema, storage
from medeid.config import MemaConfig
from medeid.mema.generation import FaceGenerator, keep_region
from medeid.mema.prompts import prompt
from medeid.models.generator import TinyGeneratorConfig, build_tiny_pipeline
from medeid.mema.build import clear_output
from medeid.pipelines.mema import (REJECTIONS, SHARDS, Progress, attempt_seed, group_blocks, pending_rows,
                                   read_landed, write_parts)
from medeid.pipelines.mema_filters import face_quality

TEMPLATE = "a clinical photo of a {sex} patient aged {age_band} with {condition}"


@pytest.fixture(scope="module")
def generator():
    return FaceGenerator(build_tiny_pipeline(TinyGeneratorConfig(resolution=32), seed=0), steps=3, guidance=2.0,
                         strength=0.5)


def test_prompt_carries_every_label():
    row = {"sex": "male", "age": 71, "disease": "periocular_tumour", "laterality": "right",
           "findings": ["severe", "nodular lesion", "medial canthus"]}
    text = prompt(row, TEMPLATE)
    assert text == ("a clinical photo of a male patient aged 70-79 with periocular tumour of the right eye, "
                    "severe nodular lesion medial canthus")
    assert prompt({**row, "disease": "healthy", "laterality": "none", "findings": []}, TEMPLATE).endswith("healthy eyes")
    with pytest.raises(ValueError, match="weight"):
        prompt(row, "a patient of {weight} kg")


def test_each_image_depends_on_its_own_seed_not_its_batch(generator):
    prompts = ["a clinical photo of a female patient with ptosis", "a clinical photo of a male patient with strabismus"]
    together = generator.generate(prompts, [11, 12])
    alone = generator.generate(prompts[1:], [12])
    assert together.shape == (2, 32, 32, 3) and together.dtype == np.uint8
    np.testing.assert_array_equal(together[1], alone[0])
    assert not np.array_equal(generator.generate(prompts[1:], [13])[0], alone[0])


def test_img2img_stays_near_its_source_and_inpainting_keeps_the_lesion(generator):
    rng = np.random.default_rng(0)
    source = (rng.uniform(0, 255, (32, 32, 3))).astype(np.uint8)
    lesion = np.zeros((32, 32), bool)
    lesion[18:24, 6:12] = True  # below the eye rows (10..16 of 32)
    keep = keep_region(32, lesion)
    assert keep[21, 8] == 1.0 and keep[12, 28] == 1.0 and keep[28, 28] == 0.0
    drawn = generator.generate(["a clinical photo of a patient"], [1], "inpaint", [source], [keep])[0]
    np.testing.assert_allclose(drawn[21, 8], source[21, 8], atol=1)  # the kept lesion is the real one
    np.testing.assert_allclose(drawn[12, 28], source[12, 28], atol=1)  # and so are the eyes
    assert np.abs(drawn.astype(int) - source).mean() > 5  # the rest was redrawn
    without_lesion = keep_region(32, None)
    assert without_lesion[12].min() == 1.0 and without_lesion[-1].max() == 0.0  # the eye rows
    with pytest.raises(ValueError, match="source photo"):
        generator.generate(["x"], [0], "img2img")
    with pytest.raises(ValueError, match="unknown strategy"):
        generator.generate(["x"], [0], "dream")


def _batch(n: int, image: np.ndarray) -> dict:
    return {
        "sample_id": np.array([f"mema-0-{i:08d}" for i in range(n)], dtype=object),
        "attempt": np.zeros(n, np.int64), "group_size": np.ones(n, np.int64), "seed": np.arange(n), "age": np.full(n, 40), "sex": np.array(["female"] * n, dtype=object),
        "disease": np.array(["ptosis"] * n, dtype=object), "laterality": np.array(["left"] * n, dtype=object),
        "severity": np.full(n, 2), "findings_json": np.array([json.dumps(["moderate", "upper lid droop"])] * n, dtype=object),
        "strategy": np.array(["txt2img"] * n, dtype=object), "source_key": np.array([""] * n, dtype=object),
        "source_mask_key": np.array([""] * n, dtype=object), "image": np.stack([image] * n),
        "prompt": np.array(["p"] * n, dtype=object), "generator_version": np.array(["v"] * n, dtype=object),
        "stage": np.array([""] * n, dtype=object), "reason": np.array([""] * n, dtype=object),
        "figure": np.full(n, np.nan, np.float32), "threshold": np.full(n, np.nan, np.float32),
    }


def test_quality_rejects_flat_images_with_their_reason():
    flat = face_quality(_batch(2, np.full((32, 32, 3), 128, np.uint8)), min_sharpness=5, min_contrast=12)
    assert list(flat["stage"]) == ["quality", "quality"] and "contrast" in flat["reason"][0]
    textured = np.random.default_rng(1).integers(0, 255, (32, 32, 3)).astype(np.uint8)
    kept = face_quality(_batch(2, textured), min_sharpness=5, min_contrast=12)
    assert list(kept["stage"]) == ["", ""] and (kept["sharpness"] > 5).all()


def test_parts_are_written_once_per_batch_and_progress_reads_them(tmp_path):
    out = str(tmp_path / "mema")
    batch = face_quality(_batch(3, np.random.default_rng(1).integers(0, 255, (32, 32, 3)).astype(np.uint8)),
                         min_sharpness=5, min_contrast=12)
    batch["stage"][1], batch["reason"][1] = "identity", "too close"
    batch |= {"nearest_similarity": np.array([0.1, 0.9, 0.2], np.float32),
              "identity_threshold": np.full(3, 0.6, np.float32),
              "predicted_disease": np.array(["ptosis", "", "ptosis"], dtype=object),
              "disease_confidence": np.array([0.9, np.nan, 0.8], np.float32),
              "lesion_mask": np.array([b"", b"", b""], dtype=object), "mask_source": np.array(["", "", ""], dtype=object)}
    for _ in range(2):  # a retried task rewrites the same files
        counts = write_parts(dict(batch), output_uri=out)
    assert counts["released"] == [2] and counts["rejected"] == [1] and counts["rejected_identity"] == [1]
    assert len(storage.list_files(f"{out}/{SHARDS}")) == len(storage.list_files(f"{out}/{REJECTIONS}")) == 1
    shards = pq.read_table(f"{out}/{SHARDS}")
    assert shards.schema.equals(schema.MEMA_IMAGE, check_metadata=False)
    assert codecs.decode(shards["image"][0].as_py()).shape == (32, 32, 3)
    assert read_landed(out, REJECTIONS, ["reason"])["reason"].to_pylist() == ["too close"]

    progress = Progress.read(out)
    assert progress.released == {"mema-0-00000000", "mema-0-00000002"}
    assert progress.attempts == {"mema-0-00000000": 1, "mema-0-00000001": 1, "mema-0-00000002": 1}
    conditions = [{"sample_id": f"mema-0-{i:08d}", "seed": 100 + i, "age": 40, "sex": "female", "disease": "ptosis",
                   "laterality": "left", "severity": 2, "findings": ["moderate"]} for i in range(4)]
    rows = pending_rows(conditions, progress, MemaConfig(max_attempts=2), None)
    assert [(r["sample_id"], r["attempt"]) for r in rows] == [("mema-0-00000001", 1), ("mema-0-00000003", 0)]
    assert rows[0]["seed"] == attempt_seed(101, 1) != 101 and rows[1]["seed"] == 103
    assert pending_rows(conditions, Progress(progress.released, {**progress.attempts, "mema-0-00000001": 2}),
                        MemaConfig(max_attempts=2), None)[0]["sample_id"] == "mema-0-00000003"
    clear_output(out)  # what --overwrite does before a build
    assert Progress.read(out).released == set() and not storage.list_files(out)


def _filtered(batch: dict, similarity: list[float]) -> dict:
    """`batch` as the writer gets it: identity and plausibility columns filled in."""
    n = len(batch["sample_id"])
    return batch | {"nearest_similarity": np.array(similarity, np.float32),
                    "identity_threshold": np.full(n, 0.6, np.float32),
                    "predicted_disease": np.array(["ptosis"] * n, dtype=object),
                    "disease_confidence": np.full(n, 0.9, np.float32),
                    "lesion_mask": np.array([b""] * n, dtype=object), "mask_source": np.array([""] * n, dtype=object)}


def test_rounds_double_a_rows_attempts_and_its_group_releases_the_first_that_passed(tmp_path):
    conditions = [{"sample_id": "mema-0-00000000", "seed": 7, "age": 40, "sex": "female", "disease": "ptosis",
                   "laterality": "left", "severity": 2, "findings": ["moderate"]}]
    def next_group(done: int) -> list[tuple[int, int]]:
        progress = Progress(set(), {conditions[0]["sample_id"]: done})
        return [(r["attempt"], r["group_size"]) for r in pending_rows(conditions, progress, MemaConfig(max_attempts=6),
                                                                      None)]

    groups = [next_group(done) for done in (0, 1, 3, 6)]
    assert groups == [[(0, 1)], [(1, 2), (2, 2)], [(3, 3), (4, 3), (5, 3)], []]  # the last group stops at max_attempts
    # The stream's blocks hold whole groups, a group bigger than a block on its own.
    rows = [{"sample_id": sid, "attempt": a} for sid, n in (("a", 1), ("b", 3), ("c", 2), ("d", 1)) for a in range(n)]
    assert [t["sample_id"].to_pylist() for t in group_blocks(rows, 2)] == [["a"], ["b"] * 3, ["c"] * 2, ["d"]]
    assert [t.num_rows for t in group_blocks(rows, 4)] == [4, 3]

    textured = np.random.default_rng(2).integers(0, 255, (32, 32, 3)).astype(np.uint8)
    batch = face_quality(_batch(3, textured), min_sharpness=5, min_contrast=12)
    batch["sample_id"][:] = conditions[0]["sample_id"]
    batch["attempt"], batch["group_size"] = np.array([5, 3, 4]), np.full(3, 3)  # any order within the block
    batch["stage"][1], batch["reason"][1] = "identity", "too close"
    batch = _filtered(batch, [0.2, 0.9, 0.3])
    out = str(tmp_path / "mema")
    counts = write_parts(dict(batch), output_uri=out)
    assert counts["released"] == [1] and counts["rejected_surplus"] == [1] and counts["rejected_identity"] == [1]
    assert read_landed(out, SHARDS, ["attempt"])["attempt"].to_pylist() == [4]
    rejected = read_landed(out, REJECTIONS, ["attempt", "stage", "reason"]).to_pylist()
    assert sorted((r["attempt"], r["stage"]) for r in rejected) == [(3, "identity"), (5, "surplus")]
    assert "attempt 4" in next(r["reason"] for r in rejected if r["stage"] == "surplus")
    # A group cut across two batches could release its row twice: the writer refuses it.
    with pytest.raises(RuntimeError, match="split"):
        write_parts({k: v[:2] for k, v in batch.items()}, output_uri=str(tmp_path / "other"))
