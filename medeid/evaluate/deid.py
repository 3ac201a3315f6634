"""The MedSem-DeID evaluation (DESIGN §3) on held-out patients: the models run here, the figures follow.

1. Every method de-identifies the held-out photos, streamed with Ray Data: MedSem-DeID and its
   ablation under each photo's password (and a wrong one, and another), the baselines, and the ideal
   swap (the renderer draws the photo's condition and photo conditions on someone else: the best any
   manifestation-keeping method can do). The held-out evaluator and the medical model judge every
   photo; only small per-photo arrays are kept (`figures.MethodOutputs`: embeddings, predictions,
   Dice, eye bands, seam steps).
2. The attack suite (`run_attacks`) on the *training* patients: the periocular recogniser trained on
   their originals; per method, an adaptive attacker trained on that method's outputs for them under
   passwords of its own; every attacker scored under both gallery protocols (`medeid.evaluate.privacy`).
3. `figures.evaluate_methods` turns it all into figures and bars; `medeid.evaluate.report` writes it up.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, replace

import numpy as np
import torch

from medeid import storage
from medeid.evaluate.attacks import eye_band_bytes, train_recogniser
from medeid.evaluate.figures import (
    ABLATION,
    IDEAL_SWAP,
    MAIN,
    ORIGINAL,
    HeldOut,
    MethodOutputs,
    evaluate_methods,
    recovery_quality,
)
from medeid.evaluate.grid import Grid, GridPicker
from medeid.evaluate.medical import dice
from medeid.evaluate.privacy import BAR_PROTOCOL, PERIOCULAR, attack_figures, frame_steps, references, seam_steps
from medeid.evaluate.verification import verification_rates
from medeid.models.deid.api import MedSemDeID
from medeid.models.deid.baselines import BASELINES
from medeid.models.identity import IdentityEmbedder
from medeid.models.medical import MedicalNet
from medeid.passwords import Secret, image_password
from medeid.pipelines.synthetic_archive import read_metadata
from medeid.synth.conditions import DISEASES, LATERALITIES
from medeid.synth.swap import IDEAL_SWAP_SEED, ideal_swap
from medeid.threads import thread_map
from medeid.train.data import archive_dataset

__all__ = ["ABLATION", "MAIN", "evaluate_deid", "run_attacks"]

# Each photo's password is derived the way an archive derives them, from a secret and the photo.
EVALUATION_SECRET = Secret("evaluation secret")
# The adaptive attacker de-identifies the training photos under passwords of its own.
ATTACKER_SECRET = Secret("the attacker's own secret")
ATTACKER_SWAP_SEED = IDEAL_SWAP_SEED + 1  # the attacker's own ideal swaps: other people again
PERIOCULAR_EPOCHS, ADAPTIVE_EPOCHS = 20, 12


@dataclass
class Judges:
    """The models that judge de-identified photos: the held-out recogniser and the medical model."""

    recogniser: IdentityEmbedder
    medical: MedicalNet

    def embed(self, images: np.ndarray) -> np.ndarray:
        return self.recogniser.embed(list(images)).vectors

    def judge(self, images: np.ndarray, masks: np.ndarray) -> MethodOutputs:
        x = torch.from_numpy(np.array(images))  # a copy: Ray's batches are read-only
        classified = self.medical.classify(x)
        segmented = self.medical.segment(x).numpy()
        return MethodOutputs(self.embed(images), classified["disease"].argmax(1).numpy(),
                             np.array([dice(p, t) for p, t in zip(segmented, masks)], np.float64),
                             predicted_laterality=classified["laterality"].argmax(1).numpy(),
                             bands=eye_band_bytes(images), seam=seam_steps(images),
                             frame=frame_steps(images))


def photo_keys(patients: np.ndarray, images: np.ndarray) -> list[str]:
    """Keyed by patient and pixel hash, so a photo keeps its passwords whatever order photos come in."""
    return [f"{p}/{hashlib.sha256(image.tobytes()).hexdigest()[:16]}" for p, image in zip(patients, images)]


def photo_passwords(patients: np.ndarray, images: np.ndarray) -> tuple[list[Secret], list[Secret], list[Secret]]:
    """Per photo: its password, a wrong one, and another one it is de-identified under a second time
    (as the adaptive attacker would, with a password of its own)."""
    keys = photo_keys(patients, images)
    return ([image_password(EVALUATION_SECRET, k) for k in keys],
            [image_password(EVALUATION_SECRET, f"{k}/wrong") for k in keys],
            [image_password(EVALUATION_SECRET, f"{k}/another") for k in keys])


def judge_medsem_deid(model: MedSemDeID, judges: Judges, images: np.ndarray, masks: np.ndarray,
                      passwords: tuple[list[Secret], list[Secret], list[Secret]]
                      ) -> tuple[MethodOutputs, dict[str, np.ndarray]]:
    """A MedSem-DeID model's outputs on a batch, and its pictures: de-identified, recovered with the
    right and a wrong password, and de-identified under another password."""
    right, wrong, another = passwords
    photos = list(images)
    deidentified = np.stack(model.deidentify(photos, right))
    recovery = model.recover(list(deidentified), right)
    restored = np.stack(recovery.images)
    wrong_recovery = model.recover(list(deidentified), wrong)
    attacked, refused = np.stack(wrong_recovery.images), ~wrong_recovery.recovered
    second = np.stack(model.deidentify(photos, another))
    psnr, ssim = recovery_quality(images, restored)
    judged = judges.judge(deidentified, masks)
    outputs = replace(judged, psnr=psnr, ssim=ssim, recovered=recovery.recovered,
                      wrong_password_vectors=judges.embed(attacked), wrong_password_refused=refused,
                      wrong_password_bands=eye_band_bytes(attacked), copies=eye_band_bytes(second),
                      two_password_cosine=(judged.vectors * judges.embed(second)).sum(1))
    pictures = {"de-identified": deidentified, "recovered (right password)": restored,
                "recovered (wrong password)": attacked, "another password": second}
    return outputs, pictures


def swapped(rows: list[dict], size: int, seed: int = IDEAL_SWAP_SEED, with_masks: bool = False):
    """The ideal swap of each photo row (`medeid.synth.swap`), rendered on the process's threads; with
    their lesion masks if asked."""
    drawn = thread_map(lambda row: ideal_swap(row, size, seed), rows)
    images = np.stack([image for image, _ in drawn])
    return (images, np.stack([mask for _, mask in drawn])) if with_masks else images


def evaluate_batch(batch: dict, deid_models: dict[str, MedSemDeID], judges: Judges, rows: list[dict] | None
                   ) -> tuple[dict[str, MethodOutputs], dict[str, np.ndarray]]:
    """Every method on one batch of held-out photos: outputs by method (ORIGINAL included) and pictures
    by grid row. `rows`: the photos' synthetic-world rows, for the ideal swap (None: no ideal swap)."""
    images, masks = batch["image"], batch["mask"].astype(bool)
    passwords = photo_passwords(batch["patient_id"], images)
    outputs, pictures = {ORIGINAL: judges.judge(images, masks)}, {ORIGINAL: images}
    for name, model in deid_models.items():
        outputs[name], shown = judge_medsem_deid(model, judges, images, masks, passwords)
        pictures[name] = shown.pop("de-identified")
        if name == MAIN:  # the grid shows recovery and the second password for the main model alone
            pictures.update({f"{MAIN}, {row}" if row == "another password" else row: v for row, v in shown.items()})
    for name, baseline in BASELINES.items():
        # The eye-kept box keeps the true lesion too, as a clinician drawing the box would.
        baselined = baseline(images, masks)
        outputs[name], pictures[name] = judges.judge(baselined, masks), baselined
        outputs[name] = replace(outputs[name], copies=outputs[name].bands)  # the attacker's copies: the same
    if rows is not None:  # judged against its own lesion: the same lesion, on the other person's eye
        swaps, swap_masks = swapped(rows, images.shape[1], with_masks=True)
        outputs[IDEAL_SWAP] = replace(judges.judge(swaps, swap_masks),
                                      copies=eye_band_bytes(swapped(rows, images.shape[1], ATTACKER_SWAP_SEED)))
        pictures[IDEAL_SWAP] = swaps
    return outputs, pictures


# ---------------------------------------------------------------------------------------------
# The attack suite


@dataclass
class TrainingPhotos:
    """The training patients' photos, where every attacker learns (never the held-out ones)."""

    images: np.ndarray  # (N, R, R, 3) uint8
    masks: np.ndarray  # (N, R, R) bool
    patients: np.ndarray
    rows: list[dict] | None  # synthetic-world rows (for the ideal swap), or None


def training_photos(archive: str, size: int, rows_by_photo: dict[str, dict] | None, *,
                    settings: storage.S3Settings | None = None, held_out: float = 0.2,
                    max_photos: int | None = None) -> TrainingPhotos:
    photos = archive_dataset(archive, "train", size, with_masks=True, settings=settings, held_out=held_out)
    if max_photos:
        photos = photos.limit(max_photos)
    images, masks, patients, ids = [], [], [], []
    for batch in photos.iter_batches(batch_size=256, batch_format="numpy"):
        images.append(batch["image"]), masks.append(batch["mask"].astype(bool))
        patients.append(batch["patient_id"]), ids.append(batch["photo_id"])
    if not images:
        raise ValueError(f"no training photos in {archive} (held_out={held_out}): the attackers learn on them")
    ids = np.concatenate(ids)
    return TrainingPhotos(np.concatenate(images), np.concatenate(masks), np.concatenate(patients).astype(str),
                          [rows_by_photo[i] for i in ids] if rows_by_photo else None)


def deidentified_training_photos(name: str, train: TrainingPhotos, deid_models: dict[str, MedSemDeID]
                                 ) -> np.ndarray:
    """The training photos as the attacker de-identifies them with method `name`, its own passwords."""
    if name in deid_models:
        keys = photo_keys(train.patients, train.images)
        passwords = [image_password(ATTACKER_SECRET, k) for k in keys]
        return np.concatenate([np.stack(deid_models[name].deidentify(list(train.images[i:i + 64]), passwords[i:i + 64]))
                               for i in range(0, len(train.images), 64)])
    if name in BASELINES:
        return BASELINES[name](train.images, train.masks)
    if name == IDEAL_SWAP:
        return swapped(train.rows, train.images.shape[1], ATTACKER_SWAP_SEED)
    raise ValueError(f"no way to de-identify with {name!r}")


def run_attacks(truth: HeldOut, original: MethodOutputs, methods: dict[str, MethodOutputs], train: TrainingPhotos,
                deid_models: dict[str, MedSemDeID], *, periocular_epochs: int = PERIOCULAR_EPOCHS,
                adaptive_epochs: int = ADAPTIVE_EPOCHS, log=print) -> dict:
    """Every attacker against every method's held-out photos (JSON-ready; `figures.privacy_quality_bars`
    turns it into bars). Each attacker learns on the training patients only."""
    started = time.monotonic()
    who = truth.truth
    periocular = train_recogniser(eye_band_bytes(train.images), train.patients, "originals", periocular_epochs, log=log)
    on_originals = attack_figures(who, original.probes(), original.probes(), periocular)
    attacks, wrong = {}, {}
    for name, outputs in methods.items():
        own_outputs = deidentified_training_photos(name, train, deid_models)
        adaptive = train_recogniser(eye_band_bytes(own_outputs), train.patients, name, adaptive_epochs, log=None)
        copies = None if outputs.copies is None else replace(outputs.probes(), bands=outputs.copies)
        attacks[name] = attack_figures(who, original.probes(), outputs.probes(), periocular, adaptive, copies)
        if outputs.wrong_password_bands is not None:
            wrong[name] = attack_figures(who, original.probes(), outputs.probes("wrong password"), periocular,
                                         adaptive, copies)
        shown = ", ".join(f"{attacker} {f[BAR_PROTOCOL]:.1%}" for attacker, f in attacks[name].items())
        log(f"[evaluate] attacks on {name}: {shown} ({time.monotonic() - started:.0f} s)")
    found = np.linalg.norm(original.vectors, axis=1) > 0
    try:
        tar = verification_rates(original.vectors[found], truth.patients[found])["tar"]
    except ValueError:  # too few photos for FAR 1e-3
        tar = None
    return {"attacks": attacks, "wrong password": wrong, "originals": on_originals, "references": references(who),
            "strength": {"periocular": on_originals[PERIOCULAR][BAR_PROTOCOL], "full_face_tar": tar},
            "training": {"photos": int(len(train.images)), "patients": int(len(set(train.patients.tolist()))),
                         "periocular_epochs": periocular_epochs, "adaptive_epochs": adaptive_epochs},
            "seconds": round(time.monotonic() - started, 1)}


# ---------------------------------------------------------------------------------------------
# The whole evaluation


def synthetic_rows(archive: str, settings: storage.S3Settings | None = None) -> dict[str, dict] | None:
    """photo id -> metadata row, when every photo is from the synthetic world (the ideal swap needs to
    re-render them); None for a real archive."""
    rows = read_metadata(archive, settings).to_pylist()
    if any(r.get("cohort_seed") is None or r.get("patient_index") is None for r in rows):
        return None
    return {r["photo_id"]: r for r in rows}


def evaluate_deid(archive: str, deid_uris: dict[str, str], evaluator_uri: str, medical_uri: str, *,
                  settings: storage.S3Settings | None = None, held_out: float = 0.2, max_photos: int | None = None,
                  max_train_photos: int | None = None, batch_size: int = 64, attacks: bool = True,
                  periocular_epochs: int = PERIOCULAR_EPOCHS, adaptive_epochs: int = ADAPTIVE_EPOCHS
                  ) -> tuple[dict, Grid]:
    """Evaluate MedSem-DeID models, the baselines and the ideal swap on an archive's held-out patients.

    Args:
        deid_uris: method name -> MedSem-DeID model URI; must hold MAIN (ABLATION is the usual other).
        evaluator_uri: the held-out recogniser's pack, never used in training.
        max_photos / max_train_photos: use only the first this many held-out / training photos.
        attacks: run the attack suite (trains the periocular and adaptive attackers).
    Returns:
        The figures (`evaluate_methods`, plus where every model came from) and the picture grid.
    """
    # 1. The models; the medical model judges the photos at the size the DeID models work at.
    deid_models = {name: MedSemDeID.from_uri(uri, settings) for name, uri in deid_uris.items()}
    judges = Judges(IdentityEmbedder.from_uri(evaluator_uri, settings), MedicalNet.from_uri(medical_uri, settings))
    resolution = deid_models[MAIN].resolution
    sizes = {name: m.resolution for name, m in deid_models.items()} | {"medical": judges.medical.config.image_size}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"the DeID and medical models must work at one image size, got {sizes}")
    rows_by_photo = synthetic_rows(archive, settings)
    if rows_by_photo is None:
        print("[evaluate] not a synthetic archive: no ideal swap to compare with", flush=True)

    # 2. The held-out photos, at the models' size.
    photos = archive_dataset(archive, "test", resolution, with_masks=True, settings=settings, held_out=held_out)
    if max_photos:
        photos = photos.limit(max_photos)

    # 3. Every method on every batch; only per-photo arrays and the grid's pictures are kept.
    parts: dict[str, list[MethodOutputs]] = {}
    truth_parts: dict[str, list[np.ndarray]] = {}
    picker, start = GridPicker(), time.monotonic()
    for batch in photos.iter_batches(batch_size=batch_size, batch_format="numpy"):
        rows = [rows_by_photo[i] for i in batch["photo_id"]] if rows_by_photo else None
        outputs, pictures = evaluate_batch(batch, deid_models, judges, rows)
        for name, output in outputs.items():
            parts.setdefault(name, []).append(output)
        labels = [f"{DISEASES[d]}/{LATERALITIES[lat]}/{s}"
                  for d, lat, s in zip(batch["disease"], batch["laterality"], batch["severity"])]
        for key, values in (("patients", batch["patient_id"]), ("diseases", batch["disease"]),
                            ("lateralities", batch["laterality"]), ("photos", batch["photo_id"]),
                            ("labels", np.array(labels))):
            truth_parts.setdefault(key, []).append(values)
        picker.offer(batch["disease"], pictures)
        print(f"[evaluate] {sum(map(len, truth_parts['patients']))} photos ({time.monotonic() - start:.0f} s)",
              flush=True)
    if not truth_parts:
        raise ValueError(f"no held-out photos in {archive} (held_out={held_out})")

    # 4. The attack suite, then the figures.
    truth = HeldOut(**{key: np.concatenate(values) for key, values in truth_parts.items()})
    truth = replace(truth, patients=truth.patients.astype(str), photos=truth.photos.astype(str))
    original = MethodOutputs.concatenate(parts.pop(ORIGINAL))
    methods = {name: MethodOutputs.concatenate(p) for name, p in parts.items()}
    privacy = None
    if attacks:
        train = training_photos(archive, resolution, rows_by_photo, settings=settings, held_out=held_out,
                                max_photos=max_train_photos)
        privacy = run_attacks(truth, original, methods, train, deid_models, periocular_epochs=periocular_epochs,
                              adaptive_epochs=adaptive_epochs)
    figures = evaluate_methods(truth, original, methods, judges.recogniser.match_threshold, privacy=privacy)
    figures["models"] = {
        **{name: {"uri": deid_uris[name], "version": model.version} for name, model in deid_models.items()},
        "evaluator": {"uri": evaluator_uri}, "medical": {"uri": medical_uri}}
    figures["archive"] = archive
    return figures, picker.grid()
