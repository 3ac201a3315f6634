"""Train on synthetic, test on real: the medical model trained on released MeMa rows, tested on real patients."""

import dataclasses
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from medeid import codecs, schema, storage
from medeid.config import MedicalConfig
from medeid.mema.tstr import DICE_RATIO_BAR, DISEASE_RATIO_BAR, compare, matched_config, mema_examples, train_on_mema
from medeid.pipelines.synthetic_archive import build_archive
from medeid.synth import cohort_rows, render_row
from medeid.synth.conditions import DISEASES, HEALTHY, PERIOCULAR_TUMOUR
from medeid.train.data import patient_ids_by_split

CFG = MedicalConfig(image_size=64, widths=(8, 16, 24, 32), epochs=2, batch_size=8, eval_every=2)


def released_rows(rows: list[dict], size: int = 64) -> pa.Table:
    """MeMa shard rows (schema.MEMA_IMAGE) whose images are rendered photos of `rows`' conditions."""
    out = []
    for i, row in enumerate(rows):
        rendered = render_row(row, size)
        mask = codecs.encode(rendered.lesion_mask, "png") if rendered.lesion_mask.any() else None
        out.append({"sample_id": f"mema-0-{i}", "attempt": 0, "seed": i, "age": row["age"], "sex": row["sex"],
                    "disease": row["disease"], "laterality": row["laterality"], "severity": row["severity"],
                    "findings": list(row["findings"]), "strategy": "txt2img", "prompt": "", "source_key": None,
                    "generator_version": "test", "image": codecs.encode(rendered.image, "png"), "width": size,
                    "height": size, "sharpness": 50.0, "nearest_similarity": 0.1, "identity_threshold": 0.6,
                    "predicted_disease": row["disease"], "disease_confidence": 0.9, "lesion_mask": mask,
                    "mask_source": "segmenter:test" if mask else None})
    return pa.Table.from_pylist(out, schema=schema.MEMA_IMAGE)


def test_rows_become_the_medical_models_columns():
    rows = [r for r in cohort_rows(30, 1, seed=21) if r["disease"] in (HEALTHY, PERIOCULAR_TUMOUR)][:4]
    batch = mema_examples(released_rows(rows), size=48)
    assert batch["image"].shape == (len(rows), 48, 48, 3) and batch["mask"].shape == (len(rows), 48, 48)
    assert [DISEASES[d] for d in batch["disease"]] == [r["disease"] for r in rows]
    tumours = [r["disease"] == PERIOCULAR_TUMOUR for r in rows]
    assert any(tumours) and [bool(m.any()) for m in batch["mask"]] == tumours  # MeMa-Seg's masks, and only theirs


def test_ratios_and_bars_compare_the_two_models_on_the_same_figures():
    real = {"disease_accuracy": 0.9, "laterality_accuracy": 0.8, "severity_accuracy": 0.7, "tumour_dice": 0.8}
    good = compare({**real, "disease_accuracy": 0.9 * DISEASE_RATIO_BAR, "tumour_dice": 0.8 * DICE_RATIO_BAR}, real)
    assert good["disease_passed"] and good["dice_passed"]
    assert good["figures"]["laterality_accuracy"]["ratio"] == pytest.approx(1.0)
    poor = compare({**real, "disease_accuracy": 0.5, "tumour_dice": float("nan")}, real)
    assert not poor["disease_passed"] and not poor["dice_passed"] and poor["figures"]["tumour_dice"]["ratio"] is None


def test_the_schedule_matches_the_real_models_steps_in_as_many_epochs():
    """MeMa's images repeat within an epoch so that it holds about as many as a real one: the same epochs
    and steps, not hundreds of tiny epochs (each has a fixed cost)."""
    real = {"train_photos": 1256, "config": {**dataclasses.asdict(MedicalConfig()), "epochs": 16}}
    cfg, repeats = matched_config(real, 100)
    assert repeats == 12 and cfg.epochs == 17 and cfg.eval_every == cfg.epochs
    assert 16 * 1256 <= cfg.epochs * 100 * repeats < 16 * 1256 + 100 * repeats  # as many images seen, to an epoch
    cfg, repeats = matched_config(real, 5000)  # more MeMa than real photos: no repeat, the real epochs
    assert (cfg.epochs, repeats) == (16, 1)


@pytest.fixture(scope="module")
def archive(ray_session, s3):
    storage.make_bucket("s3://tstr", s3.settings)
    return build_archive("s3://tstr/archive", 40, 2, size=64, seed=8).root


def test_a_model_trained_on_mema_alone_is_tested_on_the_real_held_out_patients(archive, s3, tmp_path, monkeypatch):
    """MeMa of healthy faces only: the model learns one class, so on the real held-out photos it is right
    exactly where they are healthy, and the comparison says how far below the real-trained model that is."""
    monkeypatch.setenv("MEDEID_CACHE", str(tmp_path / "cache"))
    healthy = [r for r in cohort_rows(60, 1, seed=33) if r["disease"] == HEALTHY][:12]
    fs, path = storage.filesystem("s3://tstr/mema/shards/part-0.parquet", s3.settings)
    pq.write_table(released_rows(healthy), path, filesystem=fs)
    real = {"disease_accuracy": 0.9, "laterality_accuracy": 0.9, "severity_accuracy": 0.8, "tumour_dice": 0.7,
            "train_photos": 64, "config": {"held_out": CFG.held_out}}
    figures = train_on_mema("s3://tstr/mema/shards", archive, real, "s3://tstr/mema/tstr", "s3://tstr/runs", CFG,
                            s3.settings, repeats=3)
    held_out = patient_ids_by_split(archive, CFG.held_out, s3.settings)["test"]
    from medeid.pipelines.synthetic_archive import read_metadata

    diseases = {r["patient_id"]: r["disease"] for r in read_metadata(archive, s3.settings).to_pylist()}
    healthy_share = np.mean([diseases[p] == HEALTHY for p in held_out])
    assert figures["mema_images"] == len(healthy)
    # 12 images, 3 times an epoch: 18 a worker, 2 steps of 8 (12 alone would give each worker 6: no full batch)
    assert (figures["repeats"], figures["steps"]) == (3, CFG.epochs * 2)
    assert figures["figures"]["disease_accuracy"]["mema"] == pytest.approx(healthy_share)
    assert figures["figures"]["disease_accuracy"]["ratio"] == pytest.approx(healthy_share / 0.9)
    assert not figures["disease_passed"]
    saved = json.loads(storage.read_bytes("s3://tstr/mema/tstr/figures.json", s3.settings))
    assert saved == json.loads(json.dumps(figures)) and storage.list_files("s3://tstr/mema/tstr/model", s3.settings)
    # Two short epochs, checkpoints at most every 30 s: only the last epoch's was written (every epoch's
    # would leave two, the run keeping two).
    run_files = storage.list_files("s3://tstr/runs/tstr", s3.settings)
    checkpoints = {f.split("/checkpoint_")[1].split("/")[0] for f in run_files  # checkpoint_<time>/ folders
                   if "/checkpoint_" in f and "/" in f.split("/checkpoint_")[1]}
    assert CFG.epochs == 2 and len(checkpoints) == 1
    with pytest.raises(ValueError, match="another held-out split"):
        train_on_mema("s3://tstr/mema/shards", archive, {**real, "config": {"held_out": 0.5}}, "s3://tstr/x",
                      "s3://tstr/runs", CFG, s3.settings)
