"""The MedSem-DeID evaluation (DESIGN §3): privacy, medical utility and recovery on held-out patients.

Every method (MedSem-DeID, its ablation without Enc_med, the baselines) de-identifies the same
held-out photos; the held-out evaluator recogniser and the medical model then judge the results:
- re-identification: top-1 retrieval of each de-identified photo in a gallery of all the originals;
- utility: disease accuracy and tumour-lesion Dice, each as a ratio to the originals' own;
- face distance: the Fréchet distance between the evaluator's embeddings of a method's photos and
  of the originals (FID's statistic on a face recogniser's features): whether what comes out is
  still a face photo. A box that keeps only the eyes is private and medically useful, but no face;
- MedSem-DeID only: recovery with the right password (PSNR, SSIM), re-identification after a
  wrong one, and whether two passwords give the same photo two different identities.

Two halves: `evaluate_deid` runs the models batch by batch and keeps only small per-photo arrays
(`MethodOutputs`); `evaluate_methods` turns those arrays into the figures and the quality bars, with
no model or Ray in sight. `medeid.evaluate.report` writes them up.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, fields, replace

import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from medeid import storage
from medeid.evaluate.medical import dice
from medeid.models.deid.api import MedSemDeID
from medeid.models.deid.baselines import BASELINES
from medeid.models.identity import IdentityEmbedder
from medeid.models.medical import MedicalNet
from medeid.passwords import Secret, image_password
from medeid.synth.conditions import DISEASES, PERIOCULAR_TUMOUR
from medeid.train.data import archive_dataset

MAIN, ABLATION, ORIGINAL = "MedSem-DeID", "MedSem-DeID without Enc_med", "original"
# Each photo's password is derived the way an archive derives them, from a secret and the photo.
EVALUATION_SECRET = Secret("evaluation secret")
REID_BAR, ACCURACY_RATIO_BAR, DICE_RATIO_BAR = 0.05, 0.95, 0.90
PSNR_BAR, SSIM_BAR, WRONG_PASSWORD_REID_BAR = 30.0, 0.95, 0.05
# Two passwords must give two identities; like the re-identification bars, 5 % of photos may fail.
TWO_PASSWORD_BAR = 0.95
PSNR_CAP = 100.0  # dB for a bit-exact recovery, whose PSNR is infinite (and not JSON)
GRID_COLUMNS = 6
_SLACK = 1e-9  # so that a figure equal to its bar is not failed by float rounding


# ---------------------------------------------------------------------------------------------
# Per-photo outputs and the figures they give


@dataclass(frozen=True)
class HeldOut:
    """The truth about the evaluated photos, one entry a photo."""

    patients: np.ndarray  # (N,) patient ids
    diseases: np.ndarray  # (N,) index into DISEASES

    @property
    def tumour(self) -> np.ndarray:
        return self.diseases == DISEASES.index(PERIOCULAR_TUMOUR)


@dataclass(frozen=True)
class MethodOutputs:
    """What the evaluator and the medical model made of one method's photos, one entry a photo."""

    vectors: np.ndarray  # (N, D) evaluator embeddings, L2-normalised; zeros where no face was found
    predicted: np.ndarray  # (N,) predicted disease index
    dice: np.ndarray  # (N,) Dice of the segmented lesion vs the true mask
    # MedSem-DeID models only:
    psnr: np.ndarray | None = None  # (N,) recovered with the right password vs the original, dB
    ssim: np.ndarray | None = None
    recovered: np.ndarray | None = None  # (N,) bool: the right password opened the seal
    wrong_password_vectors: np.ndarray | None = None  # embeddings of what a wrong password recovers
    wrong_password_refused: np.ndarray | None = None  # (N,) bool: a wrong password opened nothing
    two_password_cosine: np.ndarray | None = None  # (N,) the photo under two passwords, evaluator cosine

    @classmethod
    def concatenate(cls, parts: list["MethodOutputs"]) -> "MethodOutputs":
        values = {}
        for f in fields(cls):
            pieces = [getattr(p, f.name) for p in parts]
            values[f.name] = None if pieces[0] is None else np.concatenate(pieces)
        return cls(**values)


def reidentification_rate(query_vectors: np.ndarray, gallery_vectors: np.ndarray, query_patients: np.ndarray,
                          gallery_patients: np.ndarray, chunk: int = 1024) -> float:
    """Share of queries whose nearest gallery photo (cosine) is of the same patient.

    A query without a face (a zero vector) matches nothing, so it is not re-identified."""
    query_patients, gallery_patients = np.asarray(query_patients), np.asarray(gallery_patients)
    found = np.linalg.norm(query_vectors, axis=1) > 0
    hits = np.zeros(len(query_vectors), bool)
    for start in range(0, len(query_vectors), chunk):  # chunks: a gallery of 10k is a 10k x 10k matrix
        nearest = (query_vectors[start:start + chunk] @ gallery_vectors.T).argmax(1)
        hits[start:start + chunk] = gallery_patients[nearest] == query_patients[start:start + chunk]
    return float((hits & found).mean()) if len(hits) else 0.0


def frechet_distance(vectors: np.ndarray, reference: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two sets of embeddings (rows): FID's statistic.

    The covariance square root goes through symmetric eigendecompositions, which stay real and
    stable when there are fewer photos than dimensions (the covariances are then singular)."""
    mu_a, mu_b = vectors.mean(0), reference.mean(0)
    cov_a, cov_b = np.cov(vectors, rowvar=False), np.cov(reference, rowvar=False)
    w, v = np.linalg.eigh(cov_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cov_b @ root_a), 0, None)).sum()  # tr sqrt(A B)
    distance = ((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * cross
    return max(0.0, float(distance))  # not -0.000 from rounding


def recovery_quality(originals: np.ndarray, recovered: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-photo PSNR (dB, capped at PSNR_CAP) and SSIM of recovered uint8 RGB photos vs the originals."""
    psnr, ssim = [], []
    for a, b in zip(originals, recovered, strict=True):
        exact = np.array_equal(a, b)
        psnr.append(PSNR_CAP if exact else min(PSNR_CAP, peak_signal_noise_ratio(a, b, data_range=255)))
        ssim.append(1.0 if exact else structural_similarity(a, b, channel_axis=-1, data_range=255))
    return np.array(psnr, np.float64), np.array(ssim, np.float64)


def _ratio(value: float | None, reference: float | None) -> float | None:
    return None if value is None or not reference else value / reference


def _mean(values: np.ndarray) -> float | None:
    return float(np.mean(values)) if len(values) else None


def method_figures(truth: HeldOut, original: MethodOutputs, outputs: MethodOutputs,
                   match_threshold: float | None, reference: dict | None = None) -> dict:
    """The figures of one method's outputs; `reference` (the originals' figures) gives the ratios."""
    accuracy = float((outputs.predicted == truth.diseases).mean())
    tumour_dice = _mean(outputs.dice[truth.tumour])
    figures = {
        "reidentification_rate": reidentification_rate(outputs.vectors, original.vectors, truth.patients,
                                                       truth.patients),
        "no_face": float((np.linalg.norm(outputs.vectors, axis=1) == 0).mean()),
        "face_distance": frechet_distance(outputs.vectors, original.vectors) if len(outputs.vectors) > 1 else None,
        "disease_accuracy": accuracy,
        "tumour_dice": tumour_dice,
        "disease_accuracy_ratio": _ratio(accuracy, reference["disease_accuracy"]) if reference else 1.0,
        "dice_ratio": _ratio(tumour_dice, reference["tumour_dice"]) if reference else 1.0,
    }
    if outputs.psnr is None:
        return figures
    cosine = outputs.two_password_cosine
    figures.update({
        "recovery_psnr": float(outputs.psnr.mean()),
        "recovery_ssim": float(outputs.ssim.mean()),
        "recovery_exact": float((outputs.psnr >= PSNR_CAP).mean()),
        "recovered": float(outputs.recovered.mean()),
        "wrong_password_reidentification_rate": reidentification_rate(
            outputs.wrong_password_vectors, original.vectors, truth.patients, truth.patients),
        "wrong_password_refused": float(outputs.wrong_password_refused.mean()),
        "two_password_differ": None if match_threshold is None else float((cosine < match_threshold).mean()),
        "two_password_mean_cosine": float(cosine.mean()),
    })
    return figures


def dominated_by(method: dict, others: dict[str, dict]) -> list[str]:
    """The methods in `others` at least as private and as useful as `method` on every axis, and
    better on one: lower-or-equal re-identification and face distance, higher-or-equal accuracy and
    Dice ratios. A method without a face distance is compared on the other three."""
    axes = (("reidentification_rate", -1), ("disease_accuracy_ratio", 1), ("dice_ratio", 1), ("face_distance", -1))
    beaten_by = []
    for name, other in others.items():
        # An axis one side has no figure for (no tumour photos: no Dice) decides nothing.
        gains = [sign * (other[axis] - method[axis]) for axis, sign in axes
                 if other.get(axis) is not None and method.get(axis) is not None]
        if gains and all(g >= -_SLACK for g in gains) and any(g > _SLACK for g in gains):
            beaten_by.append(name)
    return beaten_by


def _bar(measure: str, bar: str, value, passed: bool, unit: str = "") -> dict:
    """One bar; `unit` says how to show the value: "%" (a rate), "dB", or "" (a plain number)."""
    return {"measure": measure, "bar": bar, "value": value, "unit": unit, "passed": bool(passed)}


def _at_most(value: float | None, limit: float) -> bool:
    return value is not None and value <= limit + _SLACK


def _at_least(value: float | None, limit: float) -> bool:
    return value is not None and value >= limit - _SLACK


def quality_bars(methods: dict[str, dict], main: str = MAIN) -> list[dict]:
    """DESIGN §3's bars for `main`, each with its value and PASS (True) or FAIL."""
    m = methods[main]
    # DESIGN §3 counts the ablation among the baselines: if it dominated, Enc_med would not be earning its keep.
    baselines = {name: methods[name] for name in (*BASELINES, ABLATION) if name in methods}
    beaten_by = dominated_by(m, baselines)
    return [
        _bar("re-identification rate", f"<= {REID_BAR:.0%}", m["reidentification_rate"],
             _at_most(m["reidentification_rate"], REID_BAR), "%"),
        _bar("disease accuracy ratio", f">= {ACCURACY_RATIO_BAR}", m["disease_accuracy_ratio"],
             _at_least(m["disease_accuracy_ratio"], ACCURACY_RATIO_BAR)),
        _bar("lesion Dice ratio", f">= {DICE_RATIO_BAR}", m["dice_ratio"], _at_least(m["dice_ratio"], DICE_RATIO_BAR)),
        _bar("recovery PSNR (right password)", f">= {PSNR_BAR:.0f} dB", m.get("recovery_psnr"),
             _at_least(m.get("recovery_psnr"), PSNR_BAR), "dB"),
        _bar("recovery SSIM (right password)", f">= {SSIM_BAR}", m.get("recovery_ssim"),
             _at_least(m.get("recovery_ssim"), SSIM_BAR)),
        _bar("re-identification after a wrong password", f"<= {WRONG_PASSWORD_REID_BAR:.0%}",
             m.get("wrong_password_reidentification_rate"),
             _at_most(m.get("wrong_password_reidentification_rate"), WRONG_PASSWORD_REID_BAR), "%"),
        _bar("two passwords, same photo: identities differ",
             f">= {TWO_PASSWORD_BAR:.0%} of photos below the match threshold", m.get("two_password_differ"),
             _at_least(m.get("two_password_differ"), TWO_PASSWORD_BAR), "%"),
        _bar("beats every baseline on the privacy-utility trade-off (re-id, accuracy, Dice, face distance)",
             "dominated by no baseline",
             "dominated by " + ", ".join(beaten_by) if beaten_by else "dominated by none",
             bool(baselines) and not beaten_by),
    ]


def evaluate_methods(truth: HeldOut, original: MethodOutputs, methods: dict[str, MethodOutputs],
                     match_threshold: float | None, main: str = MAIN) -> dict:
    """Every figure of the evaluation (JSON-ready) from per-photo outputs; `methods` must hold `main`."""
    reference = method_figures(truth, original, original, match_threshold)
    figures = {name: method_figures(truth, original, outputs, match_threshold, reference)
               for name, outputs in methods.items()}
    return {
        "photos": int(len(truth.patients)),
        "patients": int(len(set(truth.patients.tolist()))),
        "tumour_photos": int(truth.tumour.sum()),
        "photos_by_disease": {d: int((truth.diseases == i).sum()) for i, d in enumerate(DISEASES)},
        "match_threshold": match_threshold,
        "main": main,
        ORIGINAL: reference,
        "methods": figures,
        "bars": quality_bars(figures, main),
    }


# ---------------------------------------------------------------------------------------------
# Running the models on the held-out photos


@dataclass
class Judges:
    """The models that judge de-identified photos: the held-out recogniser and the medical model."""

    recogniser: IdentityEmbedder
    medical: MedicalNet

    def embed(self, images: np.ndarray) -> np.ndarray:
        return self.recogniser.embed(list(images)).vectors

    def judge(self, images: np.ndarray, masks: np.ndarray) -> MethodOutputs:
        x = torch.from_numpy(np.array(images))  # a copy: Ray's batches are read-only
        predicted = self.medical.classify(x)["disease"].argmax(1).numpy()
        segmented = self.medical.segment(x).numpy()
        return MethodOutputs(self.embed(images), predicted,
                             np.array([dice(p, t) for p, t in zip(segmented, masks)], np.float64))


def photo_passwords(patients: np.ndarray, images: np.ndarray) -> tuple[list[Secret], list[Secret], list[Secret]]:
    """Per photo: its password, a wrong one, and another one it is de-identified under a second time.

    Keyed by patient and pixel hash, so a photo keeps its passwords whatever order the photos come in."""
    keys = [f"{p}/{hashlib.sha256(image.tobytes()).hexdigest()[:16]}" for p, image in zip(patients, images)]
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
    attacked = model.recover(list(deidentified), wrong)
    second = np.stack(model.deidentify(photos, another))
    psnr, ssim = recovery_quality(images, restored)
    judged = judges.judge(deidentified, masks)
    outputs = replace(judged, psnr=psnr, ssim=ssim, recovered=recovery.recovered,
                      wrong_password_vectors=judges.embed(np.stack(attacked.images)),
                      wrong_password_refused=~attacked.recovered,
                      two_password_cosine=(judged.vectors * judges.embed(second)).sum(1))
    pictures = {"de-identified": deidentified, "recovered (right password)": restored,
                "recovered (wrong password)": np.stack(attacked.images), "another password": second}
    return outputs, pictures


@dataclass
class Grid:
    """A few held-out photos as every method leaves them: one row a method, one column a photo."""

    rows: dict[str, list[np.ndarray]]
    columns: list[str]


class GridPicker:
    """Chooses the grid's photos as batches stream past: the first of each disease, tumours first,
    then others to fill GRID_COLUMNS; keeps only their pictures."""

    def __init__(self, columns: int = GRID_COLUMNS):
        self.columns = columns
        self.by_disease: dict[int, dict[str, np.ndarray]] = {}
        self.fillers: list[tuple[int, dict[str, np.ndarray]]] = []

    def offer(self, diseases: np.ndarray, pictures: dict[str, np.ndarray]) -> None:
        def picked(i: int) -> dict[str, np.ndarray]:
            return {row: images[i].copy() for row, images in pictures.items()}  # copies: the batch can go

        for i, disease in enumerate(diseases.tolist()):
            if disease not in self.by_disease:
                self.by_disease[disease] = picked(i)
            elif len(self.fillers) < self.columns:
                self.fillers.append((disease, picked(i)))

    def grid(self) -> Grid:
        tumour = DISEASES.index(PERIOCULAR_TUMOUR)
        order = sorted(self.by_disease, key=lambda d: (d != tumour, d))
        chosen = [(d, self.by_disease[d]) for d in order] + self.fillers
        chosen = chosen[:self.columns]
        rows = {row: [pictures[row] for _, pictures in chosen] for row in (chosen[0][1] if chosen else {})}
        return Grid(rows, [DISEASES[d] for d, _ in chosen])


def evaluate_batch(batch: dict, deid_models: dict[str, MedSemDeID], judges: Judges
                   ) -> tuple[dict[str, MethodOutputs], dict[str, np.ndarray]]:
    """Every method on one batch of held-out photos: outputs by method (ORIGINAL included) and pictures
    by grid row."""
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
    return outputs, pictures


def evaluate_deid(archive: str, deid_uris: dict[str, str], evaluator_uri: str, medical_uri: str, *,
                  settings: storage.S3Settings | None = None, held_out: float = 0.2, max_photos: int | None = None,
                  batch_size: int = 64) -> tuple[dict, Grid]:
    """Evaluate MedSem-DeID models and the baselines on an archive's held-out patients.

    Args:
        deid_uris: method name -> MedSem-DeID model URI; must hold MAIN (ABLATION is the usual other).
        evaluator_uri: the held-out recogniser's pack, never used in training.
        max_photos: evaluate only the first this many held-out photos.
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

    # 2. The held-out photos, at the models' size.
    photos = archive_dataset(archive, "test", resolution, with_masks=True, settings=settings, held_out=held_out)
    if max_photos:
        photos = photos.limit(max_photos)

    # 3. Every method on every batch; only per-photo arrays and the grid's pictures are kept.
    parts: dict[str, list[MethodOutputs]] = {}
    patients, diseases, picker, start = [], [], GridPicker(), time.monotonic()
    for batch in photos.iter_batches(batch_size=batch_size, batch_format="numpy"):
        outputs, pictures = evaluate_batch(batch, deid_models, judges)
        for name, output in outputs.items():
            parts.setdefault(name, []).append(output)
        patients.append(batch["patient_id"]), diseases.append(batch["disease"])
        picker.offer(batch["disease"], pictures)
        print(f"[evaluate] {sum(map(len, patients))} photos ({time.monotonic() - start:.0f} s)", flush=True)
    if not patients:
        raise ValueError(f"no held-out photos in {archive} (held_out={held_out})")

    # 4. The figures.
    truth = HeldOut(np.concatenate(patients).astype(str), np.concatenate(diseases))
    original = MethodOutputs.concatenate(parts.pop(ORIGINAL))
    methods = {name: MethodOutputs.concatenate(p) for name, p in parts.items()}
    figures = evaluate_methods(truth, original, methods, judges.recogniser.match_threshold)
    figures["models"] = {
        **{name: {"uri": deid_uris[name], "version": model.version} for name, model in deid_models.items()},
        "evaluator": {"uri": evaluator_uri}, "medical": {"uri": medical_uri}}
    figures["archive"] = archive
    return figures, picker.grid()
