"""Train a face recogniser on synthetic identities with Ray Train (DDP) and export it as a pack.

The loop: ArcFace loss over the training patients; verification (TAR at FAR) on held-out
patients, who are never seen in training; a checkpoint every epoch. The driver exports the final
model to an insightface-loadable pack whose metadata carries the figures and match threshold.
"""

from __future__ import annotations

import dataclasses
import tempfile

import numpy as np
import ray.train
import torch
from torch import nn

from medeid import storage
from medeid.config import RecognizerConfig
from medeid.evaluate.verification import verification_rates
from medeid.models.export import export_recognizer_pack
from medeid.models.recognizer import ArcMarginLoss, Recognizer, to_input
from medeid.train.data import archive_dataset, patient_ids_by_split
from medeid.train.harness import read_state, run_training, train_epochs

IMAGE_SIZE = 112


class RecognizerWithHead(nn.Module):
    """Recogniser and margin head in one module, so one DDP wrapper syncs both."""

    def __init__(self, architecture: str, width: int, num_classes: int, margin: float, scale: float):
        super().__init__()
        self.recognizer = Recognizer(architecture, width)
        self.head = ArcMarginLoss(num_classes, margin=margin, scale=scale)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.head(self.recognizer(x), labels)[0]


def augment(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """uint8 NHWC -> normalised NCHW with a random shift and per-photo brightness and contrast."""
    x = images.permute(0, 3, 1, 2).float()
    if max_shift:
        dy, dx = torch.randint(-max_shift, max_shift + 1, (2,), generator=generator).tolist()
        x = torch.roll(x, (dy, dx), (2, 3))
    n = len(x)
    contrast = torch.empty(n, 1, 1, 1).uniform_(0.8, 1.2, generator=generator)
    brightness = torch.empty(n, 1, 1, 1).uniform_(-20, 20, generator=generator)
    return ((x - 127.5) * contrast + brightness) / 127.5


def embed_all(recognizer: nn.Module, dataset, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """L2-normalised embeddings and patient ids of every photo in `dataset`."""
    vectors, labels = [], []
    for batch in dataset.iter_batches(batch_size=batch_size, batch_format="numpy"):
        vectors.append(torch.nn.functional.normalize(recognizer(to_input(torch.from_numpy(batch["image"])))).numpy())
        labels.extend(batch["patient_id"])
    return np.concatenate(vectors), np.asarray(labels)


def train_loop_per_worker(config: dict) -> None:
    torch.manual_seed(config["seed"])
    generator = torch.Generator().manual_seed(config["seed"] + ray.train.get_context().get_world_rank())
    model = RecognizerWithHead(config["architecture"], config["width"], config["num_classes"],
                               config["margin"], config["scale"])

    def train_step(model, batch):
        return model(augment(batch["image"], config["max_shift"], generator), batch["label"])

    def evaluate(model, test, epoch) -> dict:
        vectors, labels = embed_all(model.recognizer, test)
        return {f"verify_{k}": v for k, v in verification_rates(vectors, labels, config["far"]).items()}

    train_epochs(model, lambda params: torch.optim.SGD(params, lr=config["lr"], momentum=0.9,
                                                           weight_decay=config["weight_decay"]),
                 config, train_step, evaluate, {"image": torch.uint8, "label": torch.int64}, "train_identity")


def train_recognizer(archive_root: str, pack_uri: str, runs_uri: str, name: str, cfg: RecognizerConfig,
                     settings: storage.S3Settings | None = None, fail_after_epoch: int | None = None) -> dict:
    """Train on the archive's training patients, verify on its held-out ones, export to `pack_uri`."""
    by_split = patient_ids_by_split(archive_root, cfg.held_out, settings)
    train_patients, test_patients = sorted(set(by_split["train"])), sorted(set(by_split["test"]))
    n_train = len(by_split["train"])
    classes = {patient: i for i, patient in enumerate(train_patients)}
    # Decoded once into the object store; every epoch reads the same blocks.
    datasets = {
        "train": archive_dataset(archive_root, "train", IMAGE_SIZE, classes=classes, settings=settings,
                                 held_out=cfg.held_out).select_columns(["image", "label"]).materialize(),
        "test": archive_dataset(archive_root, "test", IMAGE_SIZE, settings=settings, held_out=cfg.held_out)
        .materialize(),
    }
    config = {**dataclasses.asdict(cfg), "num_classes": len(classes), "fail_after_epoch": fail_after_epoch,
              "steps_per_epoch": n_train // (cfg.batch_size * cfg.num_workers)}
    result = run_training(train_loop_per_worker, config, name=name, storage_uri=runs_uri, datasets=datasets,
                          num_workers=cfg.num_workers, settings=settings)
    metrics = dict(result.metrics)

    model = RecognizerWithHead(cfg.architecture, cfg.width, len(classes), cfg.margin, cfg.scale)
    model.load_state_dict(read_state(result.checkpoint)["model"])
    info = {"match_threshold": metrics["verify_threshold"], "tar": metrics["verify_tar"], "far": cfg.far,
            "far_measured": metrics["verify_far"], "config": dataclasses.asdict(cfg), "archive": archive_root,
            "train_patients": len(train_patients), "train_photos": n_train, "test_patients": len(test_patients)}
    with tempfile.TemporaryDirectory() as directory:
        export_recognizer_pack(model.recognizer, directory, info)
        storage.copy_tree(directory, pack_uri, settings)
    return {**info, "pack": pack_uri, "run": storage.join(runs_uri, name), "final_epoch": metrics["epoch"],
            "steps": metrics["step"], "start_epoch": metrics["start_epoch"]}
