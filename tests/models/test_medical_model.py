"""The medical model's parts and its save/load format, without Ray."""

import numpy as np
import pytest
import torch

from medeid import storage
from medeid.evaluate.medical import classification_report, dice
from medeid.evaluate.verification import verification_rates
from medeid.models.medical import MedicalNet, MedicalNetConfig
from medeid.synth.conditions import DISEASES


def test_outputs_and_feature_shapes():
    model = MedicalNet(MedicalNetConfig(image_size=128)).eval()
    images = torch.randint(0, 255, (2, 128, 128, 3), dtype=torch.uint8)
    top, end = model.config.band_rows(128)
    assert (top, end) == (26, 90)  # brows to cheeks, 64 rows
    x = model.prepare(images)
    assert x.shape == (2, 3, 64, 128) and -1 <= x.min() and x.max() <= 1
    out = model(x)
    assert out["disease"].shape == (2, len(DISEASES)) and out["mask"].shape == (2, 64, 128)
    assert model.encode(x).shape == (2, model.config.feature_channels, 8, 16)
    assert torch.allclose(model.classify(images)["disease"].sum(1), torch.ones(2))
    masks = model.segment(images)
    assert masks.shape == (2, 128, 128) and not masks[:, :top].any() and not masks[:, end:].any()


def test_save_and_load_round_trip_through_s3(tmp_path, bucket, monkeypatch):
    monkeypatch.setenv("MEDEID_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    model = MedicalNet(MedicalNetConfig(image_size=64, widths=(8, 16, 24, 32))).eval()
    storage.copy_tree(str(model.save(tmp_path / "medical")), f"{bucket}/medical")
    loaded = MedicalNet.from_uri(f"{bucket}/medical")
    assert loaded.config == model.config
    x = torch.randn(1, 3, 32, 64)
    assert torch.equal(loaded(x)["disease"], model(x)["disease"])
    (tmp_path / "medical" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        MedicalNet.from_uri(str(tmp_path / "medical"))


def test_classification_report_and_dice():
    report = classification_report(np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, 0]), ("a", "b", "c"))
    assert report["accuracy"] == 0.6 and report["per_class"] == {"a": 0.5, "b": 1.0, "c": 0.0}
    assert report["confusion"][0] == [1, 1, 0]
    a = np.zeros((8, 8), bool)
    a[2:4, 2:4] = True
    b = np.zeros((8, 8), bool)
    b[2:4, 2:6] = True
    assert dice(a, b) == pytest.approx(2 * 4 / 12) and dice(a, a) == 1.0 and dice(~a & a, ~b & b) == 1.0


def test_verification_rates_find_the_threshold():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(40, 64))
    labels = np.repeat(np.arange(40), 4)
    vectors = centres[labels] + 0.15 * rng.normal(size=(160, 64))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rates = verification_rates(vectors, labels, far=1e-3)
    assert rates["tar"] > 0.99 and rates["far"] <= 1e-3
    assert rates["genuine_pairs"] == 40 * 6 and rates["impostor_pairs"] == 160 * 159 // 2 - 240
    noise = rng.normal(size=(160, 64))
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    assert verification_rates(noise, labels, far=1e-2)["tar"] < 0.1
    with pytest.raises(ValueError, match="too few pairs"):
        verification_rates(vectors[:10], labels[:10], far=1e-3)
