"""MedSem-DeID training on Ray Train: DDP over two workers, checkpoints on S3, a resumed run, and a
saved model that de-identifies and recovers."""

import json

import numpy as np
import pytest
import torch

from medeid import codecs, storage
from medeid.config import DeidConfig
from medeid.models.deid.api import RECOVERED, WRONG_PASSWORD, MedSemDeID
from medeid.models.deid.donors import READING_HEADS, read_drawn, synthetic_donor
from medeid.models.export import export_recognizer_pack
from medeid.models.medical import MedicalNet, MedicalNetConfig
from medeid.models.recognizer import Recognizer
from medeid.pipelines.synthetic_archive import build_archive
from medeid.train.deid import keep_lesion, train_deid

ROOT = "s3://deid-train"


@pytest.fixture(scope="module")
def world(ray_session, s3, tmp_path_factory):
    storage.make_bucket(ROOT, s3.settings)
    archive = build_archive(f"{ROOT}/archive", 30, 2, size=64, seed=5).root
    local = tmp_path_factory.mktemp("deid-models")
    torch.manual_seed(0)
    MedicalNet(MedicalNetConfig(image_size=64, widths=(8, 16, 24, 32))).eval().save(local / "medical")
    export_recognizer_pack(Recognizer("resnet"), local / "recognizer", {"match_threshold": 0.9})
    storage.copy_tree(str(local), f"{ROOT}/models")
    return {"archive": archive}


def test_training_resumes_from_its_s3_checkpoint_and_saves_a_model_that_round_trips(world, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDEID_CACHE", str(tmp_path / "cache"))
    cfg = DeidConfig(image_size=64, widths=(8, 16, 16), donor_count=8, epochs=2, batch_size=8,
                     eval_every=1, eval_photos=8)
    # One injected worker failure after the first epoch's checkpoint: the run must come back from S3.
    figures = train_deid(world["archive"], f"{ROOT}/models", f"{ROOT}/models/deid", f"{ROOT}/runs", "deid-test",
                         cfg, fail_after_epoch=0)
    assert figures["start_epoch"] == 1 and figures["epoch"] == 1 and figures["step"] > 0
    assert np.isfinite(figures["loss"]) and -1 <= figures["heldout_identity_cosine"] <= 1
    run_files = storage.list_files(f"{ROOT}/runs/deid-test")
    assert any(f.endswith("state.pt") for f in run_files)
    grids = [f for f in run_files if f.endswith(".png")]
    assert {g.rsplit("/", 1)[1] for g in grids} == {"epoch_001.png", "epoch_002.png"}
    grid = codecs.decode(storage.read_bytes(grids[0]))
    assert grid.shape[0] > 5 * 64  # five rows: original, de-identified, recovered, wrong password, another

    model = MedSemDeID.from_uri(figures["model"])
    saved = json.loads((storage.local_copy(figures["model"]) / "metrics.json").read_text())
    assert saved["donors"] == 8 and saved["config"]["epochs"] == 2 and len(model.version) == 16
    assert model.net.config.donor_seed == cfg.seed  # its donors are drawn with the findings read on each photo
    # It keeps how its medical model reads each donor drawn with each candidate: drawn once, in training.
    medical = MedicalNet.from_uri(f"{ROOT}/models/medical")
    for donor in (0, 7):
        expected = read_drawn(synthetic_donor(donor, cfg.seed), 64, medical)
        assert all(np.allclose(model.net.drawn_of(donor)[h], expected[h], atol=1e-5) for h in READING_HEADS)
    photos = [codecs.decode(storage.read_bytes(f)) for f in storage.list_files(f"{world['archive']}/photos")[:3]]
    anonymized = model.deidentify(photos, "pw")
    assert model.recover(anonymized, "pw").status == [RECOVERED] * 3
    assert model.recover(anonymized, "not pw").status == [WRONG_PASSWORD] * 3
    for original, back in zip(photos, model.recover(anonymized, "pw").images):
        mse = np.mean((original.astype(float) - back) ** 2)
        assert 10 * np.log10(255**2 / max(mse, 1e-9)) >= 30


def test_the_target_keeps_the_photos_own_lesion_and_its_rim_and_nothing_else():
    """The renderer draws a lesion at the donor's lid, a few pixels from the patient's; the model's gate
    keeps the patient's lesion where it is, so the target must show it there."""
    target, image = np.zeros((32, 32, 3), np.uint8), np.full((32, 32, 3), 200, np.uint8)
    lesion = np.zeros((32, 32), bool)
    lesion[10:13, 10:13] = True
    out = keep_lesion(target, image, lesion, grow=2)
    assert (out[8:15, 8:15] == 200).all()  # the lesion and 2 pixels around it
    assert (out[:7] == 0).all() and (out[16:] == 0).all() and (out[:, :7] == 0).all()
    assert keep_lesion(target, image, np.zeros((32, 32), bool)) is target  # no lesion: the drawn target
