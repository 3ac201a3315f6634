"""Train the medical model (Enc_med, its heads and the lesion segmenter) with Ray Train (DDP).

Each photo's context (all but the eye region and its lesion) is, with probability `context_mix`,
another lesion-free photo's: the signs lie in the eye region, but a model left alone also learns
the patient's age, sex and look around it (the cohort's diseases depend on age and sex). With the
context mixed it reads the signs: held-out disease accuracy 0.75 -> 0.87 on the demo archive, and
a face around the eyes that is not the patient's (MedSem-DeID's output) no longer changes its reading.

Loss: cross-entropy on disease, laterality and severity, plus BCE on the lesion mask of every photo
(empty for all but tumours, which teaches the decoder where lesions are not) and Dice on each photo
that has a lesion.
Evaluation on held-out patients: accuracy per disease class, laterality and severity accuracy,
and mean Dice over tumour photos.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from medeid import storage
from medeid.config import MedicalConfig
from medeid.evaluate.medical import classification_report, dice
from medeid.models.medical import MedicalNet, MedicalNetConfig, eye_region
from medeid.synth.conditions import DISEASES, PERIOCULAR_TUMOUR
from medeid.train.data import archive_dataset, patient_ids_by_split
from medeid.train.harness import read_state, run_training, train_epochs

COLUMNS = {"image": torch.uint8, "mask": torch.uint8, "disease": torch.int64, "laterality": torch.int64,
           "severity": torch.int64}


def lesion_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean of 1 - soft Dice over the photos that have a lesion; 0 for a batch without one.

    Per photo, not over the batch: a lesion is ~60 of the band's 8k pixels, and a batch-wide Dice is
    swamped by the faint probability on every background pixel; the segmenter then sometimes never
    started (tumour Dice 0.00 in one demo run of five).
    """
    has_lesion = target.flatten(1).sum(1) > 0
    if not has_lesion.any():
        return logits.sum() * 0  # keeps the graph whole for DDP
    p, t = torch.sigmoid(logits[has_lesion]).flatten(1), target[has_lesion].flatten(1)
    return (1 - (2 * (p * t).sum(1) + 1) / (p.sum(1) + t.sum(1) + 1)).mean()


def multitask_loss(out: dict, batch: dict, mask: torch.Tensor, mask_weight: float) -> torch.Tensor:
    mask = mask.float()
    # Lesions cover a few hundred pixels of 16k: weight them up so they are not drowned.
    bce = F.binary_cross_entropy_with_logits(out["mask"], mask, pos_weight=torch.tensor(10.0))
    return (F.cross_entropy(out["disease"], batch["disease"])
            + 0.5 * F.cross_entropy(out["laterality"], batch["laterality"])
            + 0.5 * F.cross_entropy(out["severity"], batch["severity"])
            + mask_weight * (bce + lesion_dice_loss(out["mask"], mask)))


def evaluate_medical(model: MedicalNet, dataset, batch_size: int = 128) -> dict:
    """Held-out figures: per-class disease accuracy, laterality/severity accuracy, tumour Dice."""
    truth = {k: [] for k in ("disease", "laterality", "severity")}
    predicted, dices = {k: [] for k in truth}, []
    tumour = DISEASES.index(PERIOCULAR_TUMOUR)
    for batch in dataset.iter_batches(batch_size=batch_size, batch_format="numpy"):
        out = model(model.prepare(torch.from_numpy(batch["image"])))
        for key in truth:
            truth[key].append(batch[key])
            predicted[key].append(out[key].argmax(1).numpy())
        masks, truth_masks = (out["mask"] > 0).numpy(), model.band(torch.from_numpy(batch["mask"])).numpy() > 0
        dices += [dice(masks[i], truth_masks[i]) for i in np.nonzero(batch["disease"] == tumour)[0]]
    truth = {k: np.concatenate(v) for k, v in truth.items()}
    predicted = {k: np.concatenate(v) for k, v in predicted.items()}
    report = classification_report(truth["disease"], predicted["disease"], DISEASES)
    return {
        "disease_accuracy": report["accuracy"],
        **{f"accuracy_{name}": value for name, value in report["per_class"].items()},
        "laterality_accuracy": float((truth["laterality"] == predicted["laterality"]).mean()),
        "severity_accuracy": float((truth["severity"] == predicted["severity"]).mean()),
        "tumour_dice": float(np.mean(dices)) if dices else float("nan"),
        "tumour_photos": len(dices),
    }


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Per-photo brightness and contrast jitter of prepared input. No flips: laterality is a label."""
    n = len(x)
    contrast = torch.empty(n, 1, 1, 1).uniform_(0.85, 1.15, generator=generator)
    brightness = torch.empty(n, 1, 1, 1).uniform_(-0.1, 0.1, generator=generator)
    return x * contrast + brightness


def mix_context(x: torch.Tensor, masks: torch.Tensor, eyes: torch.Tensor, generator: torch.Generator,
                probability: float) -> torch.Tensor:
    """Prepared band input (N, 3, h, w) whose context, outside `eyes` (h, w) and each photo's lesion
    (`masks`, (N, h, w)), comes with `probability` from another photo of the batch without a lesion
    (so the labels and masks stay true)."""
    n = len(x)
    clean = (masks.flatten(1).sum(1) == 0).nonzero()[:, 0]
    if not len(clean) or probability <= 0:
        return x
    lesion = F.max_pool2d(masks[:, None].float(), 7, stride=1, padding=3)  # the lesion, and its rim
    keep = torch.maximum(eyes.expand(n, 1, -1, -1), lesion)
    mixed = (torch.rand(n, 1, 1, 1, generator=generator) < probability).float()
    keep = 1 - mixed * (1 - keep)
    other = clean[torch.randint(len(clean), (n,), generator=generator)]
    return keep * x + (1 - keep) * x[other]


def train_loop_per_worker(config: dict) -> None:
    import ray.train

    torch.manual_seed(config["seed"])
    generator = torch.Generator().manual_seed(config["seed"] + ray.train.get_context().get_world_rank())
    model = MedicalNet(MedicalNetConfig(image_size=config["image_size"], widths=tuple(config["widths"])))

    net = model  # `model` is wrapped in DDP inside the loop; the band geometry is the same

    top, end = net.config.band_rows(config["image_size"])
    eyes = torch.from_numpy(eye_region(config["image_size"])[top:end])

    def train_step(model, batch):
        masks = net.band(batch["mask"])
        x = mix_context(net.prepare(batch["image"]), masks, eyes, generator, config["context_mix"])
        out = model(augment(x, generator))
        return multitask_loss(out, batch, masks, config["mask_weight"])

    train_epochs(model, lambda params: torch.optim.AdamW(params, lr=config["lr"], weight_decay=1e-4), config,
                 train_step, lambda model, test, epoch: evaluate_medical(model, test), COLUMNS, "train_medical")


def train_medical(archive_root: str, model_uri: str, runs_uri: str, name: str, cfg: MedicalConfig,
                  settings: storage.S3Settings | None = None, fail_after_epoch: int | None = None) -> dict:
    """Train on the archive's training patients, evaluate on its held-out ones, save to `model_uri`."""
    n_train = len(patient_ids_by_split(archive_root, cfg.held_out, settings)["train"])
    datasets = {split: held_out_photos(archive_root, cfg, settings, split) for split in ("train", "test")}
    return train_medical_on(datasets, n_train, model_uri, runs_uri, name, cfg, settings, fail_after_epoch,
                            source=archive_root)


def held_out_photos(archive_root: str, cfg: MedicalConfig, settings=None, split: str = "test"):
    """One split of the archive's photos as the medical model reads them, decoded once (materialized)."""
    return archive_dataset(archive_root, split, cfg.image_size, with_masks=True, settings=settings,
                           held_out=cfg.held_out).select_columns(list(COLUMNS)).materialize()


def train_medical_on(datasets: dict, n_train: int, model_uri: str, runs_uri: str, name: str, cfg: MedicalConfig,
                     settings: storage.S3Settings | None = None, fail_after_epoch: int | None = None,
                     source: str = "", checkpoint_every_s: float = 0.0) -> dict:
    """Train on `datasets["train"]` and evaluate on `datasets["test"]` (Ray Datasets with `COLUMNS`), save
    to `model_uri`: the archive's own split, or MeMa's images tested on real patients (`mema.tstr`)."""
    config = {**dataclasses.asdict(cfg), "fail_after_epoch": fail_after_epoch,
              "checkpoint_every_s": checkpoint_every_s,
              "steps_per_epoch": max(1, n_train // (cfg.batch_size * cfg.num_workers))}
    result = run_training(train_loop_per_worker, config, name=name, storage_uri=runs_uri, datasets=datasets,
                          num_workers=cfg.num_workers, settings=settings)
    metrics = dict(result.metrics)
    model = MedicalNet(MedicalNetConfig(image_size=cfg.image_size, widths=tuple(cfg.widths)))
    model.load_state_dict(read_state(result.checkpoint)["model"])
    figures = {**metrics, "train_photos": n_train, "archive": source, "config": dataclasses.asdict(cfg)}
    with tempfile.TemporaryDirectory() as directory:
        model.save(directory)
        (Path(directory) / "metrics.json").write_text(json.dumps(figures, indent=1))
        storage.copy_tree(directory, model_uri, settings)
    return {**figures, "model": model_uri, "run": storage.join(runs_uri, name)}
