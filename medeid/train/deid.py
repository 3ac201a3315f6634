"""Train MedSem-DeID with Ray Train (DDP) on pairs from the synthetic world.

Each training photo comes with `pairs_per_photo` targets: the photo's condition, pose, gaze and
lid opening drawn by the renderer on a donor of the model's bank (`medeid.synth.swap.donor_swap`),
the donor picked as the API picks it (among those of the nearest skin tones), and the photo's own
lesion kept in the target where it is (`keep_lesion`: the gate keeps it). The network sees the photo
and the donor's face as the API gives it, drawn with the condition the frozen medical model reads on
the photo (the ablation: the bank's face), and learns to draw the target; each step minimises
(weights in `DeidConfig`):
- paired: L1 between output and target, and between their image gradients (edges: lids, lesion
  borders; a seam or a pasted patch is a gradient the target lacks), the eye region weighted up;
- warp: the donor put in the photo's true pose, against the target (the decoder trains on donors
  placed right; at inference the pose head places them); pose: the pose head's reading against the
  photo's true pose (MSE, in units of its spread);
- medical (off unless `medical_weight` is set: it taught the network blobs the medical model reads,
  not signs): the frozen Enc_med on output vs target (features, where the eyes are) and vs input
  (disease, laterality, severity distributions, KL; lesion mask, BCE).
No identity loss: the target is another person by construction, and nothing is kept from the patient
but the lesion. The training recogniser only measures the held-out photos; the held-out evaluator
is never used here (DESIGN §2). Every `eval_every` epochs rank 0 measures held-out photos and
writes a sample grid (original, de-identified, recovered, wrong password) beside the checkpoints.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import ray.data
import ray.train
import ray.train.torch
import torch
import torch.nn.functional as F

from medeid import storage
from medeid.config import DeidConfig
from medeid.models.deid.api import MedSemDeID
from medeid.models.deid.donors import (
    READING_HEADS,
    SyntheticDonor,
    matching_condition,
    read_drawn,
    synthetic_donor,
)
from medeid.models.deid.model import (
    POSE_SPREAD,
    DeidNetConfig,
    MedSemDeIDNet,
    donor_bank,
    nearest_donors,
    skin_tone,
)
from medeid.models.medical import MedicalNet, eye_region
from medeid.models.recognizer import INPUT_SIZE, load_torch_recognizer
from medeid.pipelines.synthetic_archive import metadata_dataset, read_metadata
from medeid.pixels import to_signed
from medeid.synth.cohort import photo_nuisance
from medeid.synth.conditions import Condition
from medeid.synth.contact_sheet import image_grid
from medeid.synth.render import crop_template
from medeid.synth.swap import donor_swap
from medeid.train.data import archive_dataset, load_photos, patient_ids_by_split, split_of
from medeid.train.harness import read_state, run_training, train_epochs

GRID_PHOTOS = 6
LESION_PASTE_PX = 0  # the lesion alone: a rim of the patient's skin showed as a patch on another skin tone


def recognizer_input(x: torch.Tensor) -> torch.Tensor:
    """Model images (N, 3, R, R) in [-1, 1] -> the recogniser's 112 x 112 input (same scaling)."""
    return F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False, antialias=True)


def image_gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x[..., 1:, :] - x[..., :-1, :], x[..., :, 1:] - x[..., :, :-1]


def medical_loss(medical: MedicalNet, band_y: torch.Tensor, target: dict, source: dict,
                 where: torch.Tensor) -> torch.Tensor:
    """How far the medical model's reading of the output is from what it should be.

    Features are compared with the target's (the same condition on the donor) where the eyes are:
    the input's would carry the patient's own eyes. The findings and the lesion mask are compared
    with the input's, what the photo shows."""
    out = medical(band_y)
    weight = F.interpolate(where, size=out["features"].shape[-2:], mode="area")
    loss = ((out["features"] - target["features"]) ** 2 * weight).mean() / weight.mean()
    for head in ("disease", "laterality", "severity"):
        loss = loss + F.kl_div(out[head].log_softmax(1), source[head].softmax(1), reduction="batchmean")
    return loss + F.binary_cross_entropy_with_logits(out["mask"], torch.sigmoid(source["mask"]))


@functools.cache
def eye_map(size: int) -> torch.Tensor:
    """The medical model's eye region, (1, 1, size, size): drawn once, not every step."""
    return torch.from_numpy(eye_region(size))[None, None]


def deid_loss(net: MedSemDeIDNet, model, batch: dict, cfg: dict, generator: torch.Generator
              ) -> tuple[torch.Tensor, dict]:
    """The weighted training loss of one batch and its parts. `model` is `net`, maybe DDP-wrapped."""
    x, target = to_signed(batch["image"]), to_signed(batch["target"])
    keys = F.normalize(torch.randn(len(x), cfg["key_dim"], generator=generator), dim=1).to(x.device)
    pose = batch["pose"].to(x.device)
    if "donor_image" in batch:  # the donor drawn with the condition Enc_med reads on the photo
        donor = to_signed(batch["donor_image"]).to(x.device)
    else:
        donor = net.donor_images(batch["donor"].to(net.donors.device))
    out = model(x, keys, donor, pose)
    y = out["y"]
    eyes = eye_map(x.shape[-1]).to(x.device)
    weight = (1 + cfg["eye_weight"] * eyes) / (1 + cfg["eye_weight"] * float(eyes.mean()))  # mean 1

    def l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return ((a - b).abs() * weight[..., :a.shape[-2], :a.shape[-1]]).mean()

    (y_rows, y_cols), (t_rows, t_cols) = image_gradients(y), image_gradients(target)
    spread = out["pose"].new_tensor(POSE_SPREAD)
    parts = {"paired": l1(y, target), "edges": l1(y_rows, t_rows) + l1(y_cols, t_cols),
             "warp": l1(out["warped"], target),
             "pose": F.mse_loss(out["pose"] / spread, pose / spread)}
    if cfg["medical_weight"]:
        with torch.no_grad():
            # The forward's own reading of x when it made one (the ablation's does not).
            source = out["reading"] or net.medical(net.medical_band(x))
            source = {name: value.detach() for name, value in source.items()}
            reference = net.medical(net.medical_band(target))
        parts["medical"] = medical_loss(net.medical, net.medical_band(y), reference, source, net.medical_band(eyes))
    weights = {"paired": cfg["paired_weight"], "edges": cfg["edge_weight"], "warp": cfg["warp_weight"],
               "pose": cfg["pose_weight"], "medical": cfg["medical_weight"]}  # "medical" only when weighted
    total = sum(weights[name] * value for name, value in parts.items())
    return total, {name: float(value.detach()) for name, value in parts.items()}


def keep_lesion(target: np.ndarray, image: np.ndarray, lesion: np.ndarray, grow: int = LESION_PASTE_PX) -> np.ndarray:
    """The target with the photo's own lesion (and a rim of `grow` pixels) in it: uint8 (R, R, 3).

    The renderer draws the lesion at the donor's lid, a few pixels from where the patient's sat; the
    model keeps the patient's lesion where it is (its gate), so the target shows it there."""
    if not lesion.any():
        return target
    zone = cv2.dilate(lesion.astype(np.uint8), np.ones((2 * grow + 1,) * 2, np.uint8)) > 0
    return np.where(zone[..., None], image, target)


@functools.cache
def _medical(uri: str, settings: storage.S3Settings | None) -> MedicalNet:
    return MedicalNet.from_uri(uri, settings)


def load_pairs(batch: pa.Table, *, root: str, size: int, donors: list[SyntheticDonor], donor_skin: np.ndarray,
               pairs: int, seed: int, medical_uri: str | None, donor_choices: int,
               bank_readings: dict[str, np.ndarray] | None = None, settings: storage.S3Settings | None = None
               ) -> dict:
    """Ray Data map_batches: metadata rows -> `pairs` rows a photo: image, donor (index), donor_image
    (the donor's face as the model will get it: drawn with the condition the medical model at
    `medical_uri` reads on the photo; the bank's face without one), target, and the photo's pose
    (`model.pose_grid`'s rotation, log scale, shift x, y). `bank_readings`: the bank's `read_drawn`
    (`drawn_table`), head -> (donors, candidates, classes)."""
    photos = load_photos(batch, root=root, size=size, with_masks=True, settings=settings)
    choices = nearest_donors(torch.from_numpy(photos["image"]), torch.from_numpy(donor_skin), donor_choices).numpy()
    medical = readings = None
    if medical_uri is not None:
        medical = _medical(medical_uri, settings)
        readings = {head: value.numpy() for head, value in medical.classify(torch.from_numpy(photos["image"])).items()}
    out = {name: [] for name in ("image", "donor", "donor_image", "target", "pose")}
    for i, (row, image, lesion, options) in enumerate(zip(batch.to_pylist(), photos["image"], photos["mask"],
                                                          choices)):
        rng = np.random.default_rng([seed, int.from_bytes(hashlib.sha256(row["photo_id"].encode()).digest()[:8])])
        camera = photo_nuisance(row)
        reading = None if readings is None else {head: readings[head][i] for head in READING_HEADS}
        for donor in rng.choice(options, size=min(pairs, len(options)), replace=False):
            person = donors[donor]
            condition = Condition() if reading is None else matching_condition(
                reading, person, medical, size, int(rng.integers(2**31 - 1)),
                None if bank_readings is None else {head: table[donor] for head, table in bank_readings.items()})
            drawn = donor_swap(row, person.identity, person.camera, size)[0]
            out["image"].append(image), out["donor"].append(int(donor))
            out["donor_image"].append(person.face(size, condition))
            out["target"].append(keep_lesion(drawn, image, lesion > 0))
            out["pose"].append((camera.rotation, np.log(camera.scale), camera.shift_x, camera.shift_y))
    return {"image": np.stack(out["image"]), "donor": np.array(out["donor"], np.int64),
            "donor_image": np.stack(out["donor_image"]), "target": np.stack(out["target"]),
            "pose": np.array(out["pose"], np.float32)}


def read_drawn_batch(batch: dict, *, size: int, seed: int, medical_uri: str,
                     settings: storage.S3Settings | None = None) -> dict:
    """Ray Data map_batches: donor indices -> their `read_drawn`, one column a head."""
    medical = _medical(medical_uri, settings)
    read = [read_drawn(synthetic_donor(int(i), seed), size, medical) for i in batch["id"]]
    return {"id": batch["id"], **{head: np.stack([r[head] for r in read]) for head in READING_HEADS}}


def drawn_table(donors: int, size: int, seed: int, medical_uri: str,
                settings: storage.S3Settings | None = None) -> dict[str, np.ndarray]:
    """The medical model's reading of every donor of the bank drawn with every candidate condition, head ->
    (donors, candidates, classes): drawn once, in parallel, for the training pairs and kept in the model
    (~40 drawings a donor; each process drawing its own cost ~2.5 min of the demo's training and again
    of its evaluation)."""
    batches = (ray.data.range(donors, override_num_blocks=max(1, donors // 16))
               .map_batches(read_drawn_batch, batch_size=16,
                            fn_kwargs={"size": size, "seed": seed, "medical_uri": medical_uri,
                                       "settings": settings})
               .take_all())
    order = np.argsort([row["id"] for row in batches])
    return {head: np.stack([batches[i][head] for i in order]).astype(np.float32) for head in READING_HEADS}


def paired_dataset(root: str, size: int, donors: list[SyntheticDonor], donor_skin: np.ndarray, cfg: DeidConfig,
                   medical_uri: str | None, bank_readings: dict[str, np.ndarray] | None = None,
                   settings: storage.S3Settings | None = None) -> ray.data.Dataset:
    """The training patients' photos with their donors and targets, drawn once (the renderer is the
    slow part). `medical_uri`: the medical model whose reading the donors are drawn with (None: the
    bank's faces, for the ablation without Enc_med); `bank_readings`: its `drawn_table`."""
    return (metadata_dataset(root, settings)
            .filter(lambda row: split_of(row["patient_id"], cfg.held_out) == "train")
            .map_batches(load_pairs, batch_size=16, batch_format="pyarrow",
                         fn_kwargs={"root": root, "size": size, "donors": donors, "donor_skin": donor_skin,
                                    "pairs": cfg.pairs_per_photo, "seed": cfg.seed, "medical_uri": medical_uri,
                                    "donor_choices": cfg.donor_choices, "bank_readings": bank_readings,
                                    "settings": settings}))


def held_out_figures(net: MedSemDeIDNet, recognizer, images: np.ndarray) -> dict:
    """Quick held-out figures under one password: identity cosine and disease agreement."""
    device = net.donors.device
    deid = MedSemDeID(net, device=str(device))
    out = np.stack(deid.deidentify(list(images), "held-out check"))
    x, y = (to_signed(a).to(device) for a in (images, out))
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
    net = MedSemDeIDNet(DeidNetConfig(**config["net"]), torch.from_numpy(np.array(config["donors"])),
                        _tensors(config["bank_readings"]))
    net.medical.load_state_dict(medical.state_dict())
    eval_images = config["eval_images"]

    def train_step(model, batch):
        loss, parts = deid_loss(net, model, batch, config, generator)
        return loss

    def evaluate(model, test, epoch) -> dict:
        figures = held_out_figures(model, recognizer, eval_images)
        storage.write_bytes(storage.join(config["samples_uri"], f"epoch_{epoch + 1:03d}.png"),
                            sample_grid(model, eval_images), settings)
        return figures

    # Only the trainable parameters: Enc_med is frozen, and the donor bank needs no syncing each step.
    train_epochs(net, lambda params: torch.optim.AdamW([p for p in params if p.requires_grad], lr=config["lr"],
                                                       weight_decay=1e-4),
                 config, train_step, evaluate,
                 {"image": torch.uint8, "donor": torch.int64, "donor_image": torch.uint8, "target": torch.uint8,
                  "pose": torch.float32},
                 "train_deid",
                 ddp_kwargs={"forward_sync_buffers": False})


def _tensors(arrays: dict[str, np.ndarray] | None) -> dict[str, torch.Tensor] | None:
    return None if arrays is None else {name: torch.from_numpy(np.array(a)) for name, a in arrays.items()}


def net_config(cfg: DeidConfig, medical: MedicalNet, donors: int) -> DeidNetConfig:
    return DeidNetConfig(image_size=cfg.image_size, widths=tuple(cfg.widths), key_dim=cfg.key_dim,
                         encryptor_blocks=cfg.encryptor_blocks, use_enc_med=cfg.use_enc_med,
                         medical=dataclasses.asdict(medical.config), donors=donors,
                         donor_seed=cfg.seed if cfg.use_enc_med else None, bank_seed=cfg.seed,
                         # It learns on the synthetic archive's central squares: detected faces get that framing.
                         crop_template=tuple(crop_template().ravel().round(4).tolist()),
                         donor_choices=cfg.donor_choices, skin_shift=cfg.skin_shift,
                         drawn_readings=cfg.use_enc_med)


def train_deid(archive_root: str, models_uri: str, output_uri: str, runs_uri: str, name: str,
               cfg: DeidConfig, settings: storage.S3Settings | None = None,
               fail_after_epoch: int | None = None) -> dict:
    """Train on the archive's training patients, targets drawn on synthetic donors; save the model to `output_uri`.

    `models_uri` holds `medical/` (Enc_med, frozen) and `recognizer/` (a pack with torch weights)."""
    medical_uri, recognizer_uri = storage.join(models_uri, "medical"), storage.join(models_uri, "recognizer")
    medical = MedicalNet.from_uri(medical_uri, settings)
    people = [synthetic_donor(i, cfg.seed) for i in range(cfg.donor_count)]
    donors = donor_bank([person.face(cfg.image_size) for person in people], cfg.image_size)
    unrenderable = read_metadata(archive_root, settings)["cohort_seed"].null_count
    if unrenderable:
        raise ValueError(f"{unrenderable} photos of {archive_root} are not from the synthetic world: MedSem-DeID "
                         "trains on targets its renderer draws (the photo's condition on a donor), so it needs "
                         "an archive made by jobs/make_synthetic_archive.py")
    n_train = len(patient_ids_by_split(archive_root, cfg.held_out, settings)["train"]) * cfg.pairs_per_photo
    started = time.monotonic()
    bank_readings = (drawn_table(cfg.donor_count, cfg.image_size, cfg.seed, medical_uri, settings)
                     if cfg.use_enc_med else None)
    pairs = paired_dataset(archive_root, cfg.image_size, people, skin_tone(donors).numpy(), cfg,
                           medical_uri if cfg.use_enc_med else None, bank_readings, settings)
    datasets = {"train": pairs.materialize(),
                "test": archive_dataset(archive_root, "test", cfg.image_size, settings=settings,
                                        held_out=cfg.held_out).select_columns(["image"]).materialize()}
    print(f"[train_deid] {datasets['train'].count()} training pairs drawn in {time.monotonic() - started:.0f} s",
          flush=True)
    donors = donors.numpy()
    eval_images = np.concatenate([b["image"] for b in datasets["test"].limit(cfg.eval_photos)
                                  .iter_batches(batch_size=cfg.eval_photos, batch_format="numpy")])
    run = storage.join(runs_uri, name)
    config = {**dataclasses.asdict(cfg), "net": dataclasses.asdict(net_config(cfg, medical, len(donors))),
              "donors": donors, "bank_readings": bank_readings, "eval_images": eval_images, "medical_uri": medical_uri,
              "recognizer_uri": recognizer_uri, "settings": settings, "samples_uri": storage.join(run, "samples"),
              "fail_after_epoch": fail_after_epoch,
              "steps_per_epoch": n_train // (cfg.batch_size * cfg.num_workers)}
    result = run_training(train_loop_per_worker, config, name=name, storage_uri=runs_uri, datasets=datasets,
                          num_workers=cfg.num_workers, use_gpu=cfg.use_gpu, settings=settings)
    metrics = dict(result.metrics)
    net = MedSemDeIDNet(net_config(cfg, medical, len(donors)), torch.from_numpy(donors), _tensors(bank_readings))
    net.load_state_dict(read_state(result.checkpoint)["model"])
    figures = {**metrics, "train_pairs": n_train, "donors": len(donors), "archive": archive_root,
               "config": dataclasses.asdict(cfg)}
    with tempfile.TemporaryDirectory() as directory:
        net.save(directory, {"trained_on": archive_root, "donors": "synthetic"})
        (Path(directory) / "metrics.json").write_text(json.dumps(figures, indent=1))
        grid = sample_grid(net.eval(), eval_images)
        (Path(directory) / "samples.png").write_bytes(grid)
        storage.copy_tree(directory, output_uri, settings)
    return {**figures, "model": output_uri, "run": run}
