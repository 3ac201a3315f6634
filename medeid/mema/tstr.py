"""Train on synthetic, test on real: MeMa judged by what it is for.

The medical model (the same network, loss and schedule as `train/medical.py`) trains on MeMa's
released images alone (their conditioned labels; MeMa-Seg's masks for the lesion head) and is tested
on the archive's held-out real patients, beside the same model trained on the real training patients.
The seed paper reports ~86.7 % classification and Dice ~0.68 for models trained on MeMa; the card's bars
(`card_numbers`) ask for >= 0.85 x the real-trained disease accuracy and >= 0.75 x its lesion Dice.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import ray

from medeid import codecs, storage
from medeid.config import MedicalConfig
from medeid.mema.card_numbers import TSTR_DICE_BAR as DICE_RATIO_BAR
from medeid.mema.card_numbers import TSTR_DISEASE_BAR as DISEASE_RATIO_BAR
from medeid.models.identity import centred_crop
from medeid.synth.conditions import DISEASES, LATERALITIES
from medeid.train.medical import COLUMNS, held_out_photos, train_medical_on

TSTR = "tstr"  # under the MeMa root: figures.json (numbers only: no image, no real patient named)
TSTR_CHECKPOINT_EVERY_S = 30.0
COMPARED = ("disease_accuracy", "laterality_accuracy", "severity_accuracy", "tumour_dice")


def mema_examples(batch: pa.Table, *, size: int) -> dict:
    """Ray Data map_batches: released MeMa rows -> the medical model's columns (image, mask, labels)."""
    rows = batch.to_pylist()
    images, masks = [], []
    for row in rows:
        images.append(centred_crop(codecs.decode(row["image"]), size))
        mask = np.zeros((size, size), np.uint8)
        if row["lesion_mask"]:
            mask = (centred_crop(codecs.decode(row["lesion_mask"], "L"), size) > 127).astype(np.uint8)
        masks.append(mask)
    return {"image": np.stack(images), "mask": np.stack(masks),
            "disease": np.array([DISEASES.index(r["disease"]) for r in rows], dtype=np.int64),
            "laterality": np.array([LATERALITIES.index(r["laterality"]) for r in rows], dtype=np.int64),
            "severity": np.array([r["severity"] for r in rows], dtype=np.int64)}


def mema_dataset(shards_uri: str, size: int, settings: storage.S3Settings | None = None) -> ray.data.Dataset:
    fs, path = storage.filesystem(shards_uri, settings)
    columns = ["image", "lesion_mask", "disease", "laterality", "severity"]
    return (ray.data.read_parquet(path, filesystem=fs, columns=columns)
            .map_batches(mema_examples, batch_size=64, batch_format="pyarrow", fn_kwargs={"size": size})
            .select_columns(list(COLUMNS)).materialize())


def compare(mema_trained: dict, real_trained: dict) -> dict:
    """Each figure of the two models on the same real held-out photos, and MeMa's as a share of real's."""
    rows = {}
    for key in COMPARED:
        mema, real = mema_trained.get(key), real_trained.get(key)
        usable = mema is not None and real not in (None, 0) and np.isfinite(mema) and np.isfinite(real)
        rows[key] = {"mema": mema, "real": real, "ratio": mema / real if usable else None}
    disease, dice = rows["disease_accuracy"]["ratio"], rows["tumour_dice"]["ratio"]
    return {"figures": rows, "disease_ratio_bar": DISEASE_RATIO_BAR, "dice_ratio_bar": DICE_RATIO_BAR,
            "disease_passed": disease is not None and disease >= DISEASE_RATIO_BAR,
            "dice_passed": dice is not None and dice >= DICE_RATIO_BAR}


def matched_config(real_metrics: dict, n_mema: int, max_epochs: int = 400) -> tuple[MedicalConfig, int]:
    """The real-trained model's own config, with as many optimisation steps on MeMa's images as it took on
    the real ones, and one evaluation, at the end: the comparison is of data, not of training length.

    Returns the config and how many times MeMa's images repeat in one epoch: about as many as the real
    training photos, so the epochs are as many as the real model's. Each epoch has a fixed cost of its own
    (Ray Data's split of the shard, the report), which hundreds of 3-step epochs paid ~1.4 s at a time:
    5 of the 7 minutes train-on-MeMa took in the demo of 2026-12-08."""
    fields = dict(real_metrics["config"])
    fields["widths"] = tuple(fields["widths"])
    real = MedicalConfig(**fields)
    repeats = max(1, real_metrics["train_photos"] // n_mema)
    epochs = min(max_epochs, max(real.epochs, math.ceil(real.epochs * real_metrics["train_photos"]
                                                         / (n_mema * repeats))))
    return dataclasses.replace(real, epochs=epochs, eval_every=epochs), repeats


def train_on_mema(shards_uri: str, archive_root: str, real_metrics: dict, output_uri: str, runs_uri: str,
                  cfg: MedicalConfig, settings: storage.S3Settings | None = None, repeats: int = 1) -> dict:
    """Train the medical model on MeMa's released images (each `repeats` times an epoch), test it on the
    archive's held-out patients and compare with `real_metrics` (the real-trained model's `metrics.json`,
    same split). Writes the model to `<output_uri>/model` and the figures to `<output_uri>/figures.json`;
    returns them."""
    if dataclasses.asdict(cfg)["held_out"] != real_metrics.get("config", {}).get("held_out", cfg.held_out):
        raise ValueError("the real-trained model was tested on another held-out split: the figures would not compare")
    train = mema_dataset(shards_uri, cfg.image_size, settings)
    n_train = train.count()
    if n_train == 0:
        raise ValueError(f"no released MeMa image under {shards_uri} to train on")
    repeated = train.union(*[train] * (repeats - 1)) if repeats > 1 else train  # the same blocks, no copy
    datasets = {"train": repeated, "test": held_out_photos(archive_root, cfg, settings)}
    # Many short epochs on a few hundred images: checkpoints at most every 30 s, not every epoch.
    mema_trained = train_medical_on(datasets, n_train * repeats, storage.join(output_uri, "model"), runs_uri,
                                    "tstr", cfg, settings, source=shards_uri,
                                    checkpoint_every_s=TSTR_CHECKPOINT_EVERY_S)
    figures = {**compare(mema_trained, real_metrics), "mema_images": n_train, "epochs": cfg.epochs,
               "repeats": repeats, "steps": mema_trained.get("step"),
               "real_train_photos": real_metrics.get("train_photos")}
    storage.write_bytes(storage.join(output_uri, "figures.json"), json.dumps(figures, indent=1).encode(), settings)
    return figures


def run_tstr(shards_uri: str, archive_root: str, medical_uri: str, output_uri: str,
             settings: storage.S3Settings | None = None, log=print) -> dict | None:
    """build_mema's step: TSTR against the real-trained medical model at `medical_uri`, on its config;
    None (said in the log) when that model has no `metrics.json` to compare with."""
    metrics_uri = storage.join(medical_uri, "metrics.json")
    if not storage.exists(metrics_uri, settings):
        log(f"[build_mema] train-on-MeMa test skipped: no metrics.json beside the medical model at {medical_uri} "
            f"(the real-trained figures it compares with); the card's TSTR bars FAIL as not run")
        return None
    real = json.loads(storage.read_bytes(metrics_uri, settings))
    fs, path = storage.filesystem(shards_uri, settings)
    n_mema = pads.dataset(path, filesystem=fs, format="parquet").count_rows()
    cfg, repeats = matched_config(real, max(1, n_mema))
    return train_on_mema(shards_uri, archive_root, real, output_uri, storage.join(output_uri, "runs"), cfg, settings,
                         repeats)
