"""Train MedSem-DeID with Ray Train (DDP) on an archive's photos, drawing identities from MeMa faces.

Each step de-identifies a batch under random keys and donors and minimises (weights in `DeidConfig`):
- identity: the training recogniser's cosine between output and input, above `identity_margin`;
- diversity: the same photos under a second key: cosine between the two outputs above the margin;
- medical: the frozen medical model on output vs input: Enc_med features (MSE), disease, laterality
  and severity distributions (KL) and the lesion mask (BCE to the input's soft mask);
- realism: the output's image gradients against those of real faces (the patient where kept, the
  donor where replaced), which forbids seams and foreign texture; plus a light colour anchor to the donor;
- kept area: the share of the photo kept from the patient, so the gate keeps what the diagnosis
  needs and no more.
The recogniser used here is the pipeline's; the held-out evaluator never is (DESIGN §2).
Every `eval_every` epochs rank 0 measures held-out photos and writes a sample grid (original,
de-identified, recovered, wrong password) beside the run's checkpoints.
"""

from __future__ import annotations

import dataclasses
import io
import json
import tempfile
from pathlib import Path

import numpy as np
import ray.train
import ray.train.torch
import torch
import torch.nn.functional as F

from medeid import storage
from medeid.config import DeidConfig
from medeid.models.deid.api import MedSemDeID
from medeid.models.deid.model import DeidNetConfig, MedSemDeIDNet, donor_bank
from medeid.models.medical import MedicalNet
from medeid.models.recognizer import INPUT_SIZE, load_torch_recognizer
from medeid.models.deid.donors import donor_images
from medeid.synth.contact_sheet import image_grid
from medeid.train.data import archive_dataset, patient_ids_by_split
from medeid.train.harness import read_state, run_training, train_epochs

GRID_PHOTOS = 6


def recognizer_input(x: torch.Tensor) -> torch.Tensor:
    """Model images (N, 3, R, R) in [-1, 1] -> the recogniser's 112 x 112 input (same scaling)."""
    return F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False, antialias=True)


def image_gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x[..., 1:, :] - x[..., :-1, :], x[..., :, 1:] - x[..., :, :-1]


def medical_loss(medical: MedicalNet, band_y: torch.Tensor, reference: dict, where: torch.Tensor) -> torch.Tensor:
    """How far the medical model's reading of the output is from its reading of the input.

    Features are compared where the manifestation lies (`where`, the eye region, at the features'
    resolution): elsewhere in the band they describe hair and cheeks, which are identity, not diagnosis.
    """
    out = medical(band_y)
    weight = F.interpolate(where, size=out["features"].shape[-2:], mode="area")
    loss = ((out["features"] - reference["features"]) ** 2 * weight).mean() / weight.mean()
    for head in ("disease", "laterality", "severity"):
        loss = loss + F.kl_div(out[head].log_softmax(1), reference[head].softmax(1), reduction="batchmean")
    return loss + F.binary_cross_entropy_with_logits(out["mask"], torch.sigmoid(reference["mask"]))


def deid_loss(net: MedSemDeIDNet, model, recognizer, images: torch.Tensor, cfg: dict,
              generator: torch.Generator) -> tuple[torch.Tensor, dict]:
    """The weighted training loss of one batch and its parts. `model` is `net`, maybe DDP-wrapped."""
    x = to_model_input(images)
    n, k = len(x), min(cfg["diversity_batch"], len(x))
    # The first k photos a second time under another key and donor, in the same forward: DDP allows
    # one forward per backward.
    keys = F.normalize(torch.randn(n + k, cfg["key_dim"], generator=generator), dim=1).to(x.device)
    # Donors as the API picks them: a key's choice among the donors of the nearest skin tones.
    choices = net.donor_choices(images).cpu()
    pick = torch.randint(choices.shape[1], (n,), generator=generator)
    other = (pick[:k] + torch.randint(1, max(2, choices.shape[1]), (k,), generator=generator)) % choices.shape[1]
    donors = torch.cat([choices[torch.arange(n), pick], choices[torch.arange(k), other]]).to(x.device)
    donor = net.donor_images(donors)
    out = model(torch.cat([x, x[:k]]), keys, donor)
    y, y2, gate, donor, face = out["y"][:n], out["y"][n:], out["gate"][:n], donor[:n], out["face"][:n]
    with torch.no_grad():
        e_x = F.normalize(recognizer(recognizer_input(x)))
        # The forward's own reading of x when it made one (the ablation's does not).
        reading = out["reading"] or net.medical(net.medical_band(x))
        reference = {name: value[:n].detach() for name, value in reading.items()}
    e_all = F.normalize(recognizer(recognizer_input(out["y"])))
    e_y, e_y2 = e_all[:n], e_all[n:]
    parts = {"identity": F.relu((e_y * e_x).sum(1) - cfg["identity_margin"]).mean(),
             "diversity": F.relu((e_y[:k] * e_y2).sum(1) - cfg["identity_margin"]).mean()}

    parts["medical"] = medical_loss(net.medical, net.medical_band(y), reference, net.medical_band(net.eye_prior))

    kept = 1 - gate.detach()
    (x_rows, x_cols), (d_rows, d_cols), (y_rows, y_cols) = map(image_gradients, (x, donor, y))
    parts["realism"] = (F.l1_loss(y_rows, kept[..., 1:, :] * x_rows + (1 - kept[..., 1:, :]) * d_rows)
                        + F.l1_loss(y_cols, kept[..., :, 1:] * x_cols + (1 - kept[..., :, 1:]) * d_cols))
    parts["anchor"] = F.l1_loss(face, donor)
    parts["kept_area"] = (1 - gate).mean()

    weights = {"identity": cfg["identity_weight"], "diversity": cfg["diversity_weight"],
               "medical": cfg["medical_weight"], "realism": cfg["realism_weight"], "anchor": cfg["anchor_weight"],
               "kept_area": cfg["kept_area_weight"]}
    total = sum(weights[name] * value for name, value in parts.items())
    return total, {name: float(value.detach()) for name, value in parts.items()}


def to_model_input(images: torch.Tensor) -> torch.Tensor:
    return images.permute(0, 3, 1, 2).float() / 127.5 - 1.0


def held_out_figures(net: MedSemDeIDNet, recognizer, images: np.ndarray) -> dict:
    """Quick held-out figures under one password: identity cosine and disease agreement."""
    device = net.donors.device
    deid = MedSemDeID(net, device=str(device))
    out = np.stack(deid.deidentify(list(images), "held-out check"))
    x, y = (to_model_input(torch.from_numpy(a)).to(device) for a in (images, out))
    cosine = (F.normalize(recognizer(recognizer_input(x))) * F.normalize(recognizer(recognizer_input(y)))).sum(1)
    before = net.medical(net.medical_band(x))["disease"].argmax(1)
    after = net.medical(net.medical_band(y))["disease"].argmax(1)
    return {"heldout_identity_cosine": float(cosine.mean()),
            "heldout_disease_agreement": float((before == after).float().mean())}


def sample_grid(net: MedSemDeIDNet, images: np.ndarray) -> bytes:
    """PNG: original / de-identified / recovered / wrong password / another password, one photo a column."""
    deid = MedSemDeID(net, device=str(net.donors.device))
    photos = list(images[:GRID_PHOTOS])
    anonymized = deid.deidentify(photos, "grid password")
    rows = [photos, anonymized, deid.recover(anonymized, "grid password").images,
            deid.recover(anonymized, "a wrong password").images, deid.deidentify(photos, "another password")]
    labels = ["original", "de-identified", "recovered\n(right password)", "recovered\n(wrong password)",
              "another password"]
    buffer = io.BytesIO()
    image_grid(rows, labels, [f"photo {i + 1}" for i in range(len(photos))]).save(buffer, "PNG")
    return buffer.getvalue()


def train_loop_per_worker(config: dict) -> None:
    torch.manual_seed(config["seed"])
    rank = ray.train.get_context().get_world_rank()
    generator = torch.Generator().manual_seed(config["seed"] + 1000 * rank)
    settings = config["settings"]
    medical = MedicalNet.from_uri(config["medical_uri"], settings)
    recognizer = load_torch_recognizer(storage.local_copy(config["recognizer_uri"], settings))
    recognizer.requires_grad_(False)
    recognizer.to(ray.train.torch.get_device())
    net = MedSemDeIDNet(DeidNetConfig(**config["net"]), torch.from_numpy(np.array(config["donors"])))
    net.medical.load_state_dict(medical.state_dict())
    eval_images = config["eval_images"]

    def train_step(model, batch):
        loss, parts = deid_loss(net, model, recognizer, batch["image"], config, generator)
        return loss

    def evaluate(model, test, epoch) -> dict:
        figures = held_out_figures(model, recognizer, eval_images)
        storage.write_bytes(storage.join(config["samples_uri"], f"epoch_{epoch + 1:03d}.png"),
                            sample_grid(model, eval_images), settings)
        return figures

    # Only the trainable parameters: Enc_med is frozen, and the donor bank needs no syncing each step.
    train_epochs(net, lambda params: torch.optim.AdamW([p for p in params if p.requires_grad], lr=config["lr"],
                                                       weight_decay=1e-4),
                 config, train_step, evaluate, {"image": torch.uint8}, "train_deid",
                 ddp_kwargs={"forward_sync_buffers": False})


def net_config(cfg: DeidConfig, medical: MedicalNet, donors: int) -> DeidNetConfig:
    return DeidNetConfig(image_size=cfg.image_size, widths=tuple(cfg.widths), key_dim=cfg.key_dim,
                         encryptor_blocks=cfg.encryptor_blocks, use_enc_med=cfg.use_enc_med,
                         medical=dataclasses.asdict(medical.config), donors=donors)


def train_deid(archive_root: str, mema_uri: str | None, models_uri: str, output_uri: str, runs_uri: str, name: str,
               cfg: DeidConfig, settings: storage.S3Settings | None = None,
               fail_after_epoch: int | None = None) -> dict:
    """Train on the archive's training patients with MeMa donors; save the model to `output_uri`.

    `models_uri` holds `medical/` (Enc_med, frozen) and `recognizer/` (a pack with torch weights)."""
    medical_uri, recognizer_uri = storage.join(models_uri, "medical"), storage.join(models_uri, "recognizer")
    medical = MedicalNet.from_uri(medical_uri, settings)
    donors = donor_bank(donor_images(cfg.donors, size=cfg.image_size, count=cfg.donor_count, mema_uri=mema_uri,
                                     seed=cfg.seed, settings=settings), cfg.image_size).numpy()
    n_train = len(patient_ids_by_split(archive_root, cfg.held_out, settings)["train"])
    datasets = {split: archive_dataset(archive_root, split, cfg.image_size, settings=settings, held_out=cfg.held_out)
                .select_columns(["image"]).materialize() for split in ("train", "test")}
    eval_images = np.concatenate([b["image"] for b in datasets["test"].limit(cfg.eval_photos)
                                  .iter_batches(batch_size=cfg.eval_photos, batch_format="numpy")])
    run = storage.join(runs_uri, name)
    config = {**dataclasses.asdict(cfg), "net": dataclasses.asdict(net_config(cfg, medical, len(donors))),
              "donors": donors, "eval_images": eval_images, "medical_uri": medical_uri,
              "recognizer_uri": recognizer_uri, "settings": settings, "samples_uri": storage.join(run, "samples"),
              "fail_after_epoch": fail_after_epoch,
              "steps_per_epoch": n_train // (cfg.batch_size * cfg.num_workers)}
    result = run_training(train_loop_per_worker, config, name=name, storage_uri=runs_uri, datasets=datasets,
                          num_workers=cfg.num_workers, use_gpu=cfg.use_gpu, settings=settings)
    metrics = dict(result.metrics)
    net = MedSemDeIDNet(net_config(cfg, medical, len(donors)), torch.from_numpy(donors))
    net.load_state_dict(read_state(result.checkpoint)["model"])
    figures = {**metrics, "train_photos": n_train, "donors": len(donors), "donor_source": cfg.donors, "archive": archive_root, "mema": mema_uri,
               "config": dataclasses.asdict(cfg)}
    with tempfile.TemporaryDirectory() as directory:
        net.save(directory, {"trained_on": archive_root, "donors": cfg.donors, "mema": mema_uri})
        (Path(directory) / "metrics.json").write_text(json.dumps(figures, indent=1))
        grid = sample_grid(net.eval(), eval_images)
        (Path(directory) / "samples.png").write_bytes(grid)
        storage.copy_tree(directory, output_uri, settings)
    return {**figures, "model": output_uri, "run": run}
