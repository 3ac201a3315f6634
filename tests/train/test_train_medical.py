"""Medical model training on Ray Train: a short run on S3, held-out figures, a loadable model."""

import json

import numpy as np
import pytest
import torch

from medeid import storage
from medeid.config import MedicalConfig
from medeid.models.medical import MedicalNet, MedicalNetConfig
from medeid.pipelines.synthetic_archive import build_archive
from medeid.synth.conditions import DISEASES
from medeid.train.medical import lesion_dice_loss, mix_context, train_medical


@pytest.fixture(scope="module")
def archive(ray_session, s3):
    storage.make_bucket("s3://medical-train", s3.settings)
    return build_archive("s3://medical-train/archive", 40, 2, size=64, seed=8).root


def test_short_run_reports_held_out_figures_and_saves_a_loadable_model(archive, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDEID_CACHE", str(tmp_path / "cache"))
    cfg = MedicalConfig(image_size=64, widths=(8, 16, 24, 32), epochs=1, batch_size=8, eval_every=1)
    figures = train_medical(archive, "s3://medical-train/models/medical", "s3://medical-train/runs", "medical-test",
                            cfg)
    assert figures["epoch"] == 0 and figures["step"] > 0 and np.isfinite(figures["loss"])
    assert 0 <= figures["disease_accuracy"] <= 1 and 0 <= figures["tumour_dice"] <= 1
    assert figures["tumour_photos"] == 6  # seed 8 holds out three tumour patients, two photos each
    assert storage.list_files("s3://medical-train/runs/medical-test")

    model = MedicalNet.from_uri(figures["model"])
    assert model.config.widths == (8, 16, 24, 32)
    saved = json.loads((model_dir := storage.local_copy(figures["model"])).joinpath("metrics.json").read_text())
    assert saved["disease_accuracy"] == figures["disease_accuracy"] and model_dir.exists()
    probabilities = model.classify(torch.zeros(1, 64, 64, 3, dtype=torch.uint8))["disease"]
    assert probabilities.shape == (1, len(DISEASES))


def test_lesion_loss_is_per_photo_so_background_elsewhere_does_not_swamp_it():
    """A lesion found exactly scores ~0 however many lesion-free photos share its batch, and a batch
    without a lesion adds nothing (the BCE teaches where lesions are not)."""
    lesion = torch.zeros(1, 32, 32)
    lesion[0, 10:14, 10:14] = 1
    found = torch.where(lesion > 0, 20.0, -20.0)
    faint_background = torch.full((15, 32, 32), -3.0)  # p ~ 0.05 on every pixel of 15 empty photos
    batch_logits, batch_masks = torch.cat([found, faint_background]), torch.cat([lesion, torch.zeros(15, 32, 32)])
    assert lesion_dice_loss(batch_logits, batch_masks) < 0.05
    assert lesion_dice_loss(-found, lesion) > 0.95  # the lesion missed
    empty = faint_background.clone().requires_grad_()
    loss = lesion_dice_loss(empty, torch.zeros(15, 32, 32))
    loss.backward()
    assert loss.item() == 0 and empty.grad is not None


def test_segmenter_starts_from_the_background_prior():
    out = MedicalNet(MedicalNetConfig(image_size=64, widths=(8, 16, 24, 32)))(torch.zeros(2, 3, 32, 64))
    assert torch.sigmoid(out["mask"]).max() < 0.2


def test_context_mixing_keeps_eyes_and_lesion_and_takes_the_rest_from_a_lesion_free_photo():
    n, h, w = 4, 16, 32
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, h, w).clone()  # photo i is all i
    masks = torch.zeros(n, h, w)
    masks[0, 2, 2] = 1  # photo 0 has a lesion, far from the eyes
    eyes = torch.zeros(h, w)
    eyes[6:10, 8:24] = 1
    mixed = mix_context(x, masks, eyes, torch.Generator().manual_seed(0), probability=1.0)
    assert torch.equal(mixed[:, :, 6:10, 8:24], x[:, :, 6:10, 8:24])  # the eye region is each photo's own
    assert mixed[0, :, 2, 2].eq(0).all()  # so is the lesion
    context = mixed[:, 0, 14, 0]
    assert (context != torch.arange(n)).any() and context.ne(0).all()  # context from lesion-free photos only
    assert torch.equal(mix_context(x, masks, eyes, torch.Generator(), probability=0.0), x)
