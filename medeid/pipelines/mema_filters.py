"""MeMa's filter stages, each a Ray Data map_batches stage over numpy batches of drawn faces: face
quality, identity (full face, and the eye band when the build trained an eye-band check) and medical
plausibility. A stage that rejects a row fills its `stage`/`reason`/`figure`/`threshold` columns;
later stages pass rejected rows through untouched (`medeid.pipelines.mema` writes them out).
"""

from __future__ import annotations

import hashlib

import cv2
import numpy as np
import ray
import torch

from medeid import codecs, storage
from medeid.models.identity import IdentityEmbedder
from medeid.models.identity_index import IdentityIndex
from medeid.models.medical import MedicalNet
from medeid.synth.conditions import DISEASES, PERIOCULAR_TUMOUR


def is_rejected(batch: dict) -> np.ndarray:
    return np.array([bool(s) for s in batch["stage"]], dtype=bool)


def own_verdicts(batch: dict) -> dict:
    """The batch with its verdict columns copied: Ray Data hands stages read-only arrays."""
    return {**batch, **{k: np.array(batch[k], copy=True) for k in ("stage", "reason", "figure", "threshold")}}


def reject(batch: dict, i: int, stage: str, reason: str, figure: float, threshold: float) -> None:
    batch["stage"][i], batch["reason"][i] = stage, reason
    batch["figure"][i], batch["threshold"][i] = figure, threshold


def face_quality(batch: dict, *, min_sharpness: float, min_contrast: float) -> dict:
    """Task: reject blank, washed-out or blurred images (grey contrast, variance of the Laplacian)."""
    batch, n = own_verdicts(batch), len(batch["sample_id"])
    sharpness = np.zeros(n, np.float32)
    for i, image in enumerate(batch["image"]):
        grey = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
        sharpness[i] = cv2.Laplacian(grey, cv2.CV_64F).var()
        contrast = float(grey.std())
        if contrast < min_contrast:
            reject(batch, i, "quality", f"too little contrast to hold a face (grey std {contrast:.1f})",
                   contrast, min_contrast)
        elif sharpness[i] < min_sharpness:
            reject(batch, i, "quality", f"blurred (Laplacian variance {sharpness[i]:.1f})", sharpness[i],
                   min_sharpness)
    return {**batch, "sharpness": sharpness}


def reject_eye_matches(batch: dict, check, recogniser=None) -> None:
    """Reject, in place, the rows not yet rejected whose eye band copies a real photo's or re-identifies a
    real patient under `check` (a `mema.eye_filter.EyeCheck`)."""
    todo = np.flatnonzero(~is_rejected(batch))
    if not len(todo):
        return
    similarity, distance = check.score([np.ascontiguousarray(batch["image"][i]) for i in todo], recogniser)
    for j, i in enumerate(todo):
        if distance[j] < check.copy_distance:
            reject(batch, i, "identity", f"eye band copies a real photo's (mean difference {distance[j]:.1f})",
                   distance[j], check.copy_distance)
        elif similarity[j] >= check.threshold:
            reject(batch, i, "identity", f"eye band too close to a real patient (periocular cosine "
                   f"{similarity[j]:.3f})", similarity[j], check.threshold)


class IdentityFilter:
    """Actor: embed each image and reject it when the nearest real patient is too close.

    A face is too close when it reaches both the recogniser's per-pair match threshold (measured at
    its FAR on held-out patients) and `open_set`, the cosine that few real photos reach with their
    nearest photo of another patient (`IdentityIndex.open_set_threshold`, computed once by the build),
    less a safety margin: a search over N photos gives a stranger N chances at the per-pair threshold.
    With a detector in the pack, exactly one face must also be found. With an
    eye-band check (`mema.eye_filter.EyeCheck`, its object ref in a one-item list so that Ray hands it
    over unresolved), a face whose eye band re-identifies a real patient, or copies a real photo's, is
    rejected too: the eyes identify a person where a full-face recogniser barely looks.
    """

    def __init__(self, pack_uri: str, index_ref, margin: float, settings: storage.S3Settings | None = None,
                 eye_ref: list | None = None, open_set: float | None = None):
        self.embedder = IdentityEmbedder.from_uri(pack_uri, settings)
        if self.embedder.match_threshold is None:
            raise ValueError(f"the recogniser pack at {pack_uri} has no match_threshold in its pack.json: "
                             f"the identity filter cannot tell a match from a stranger")
        self.index = IdentityIndex.from_ref(index_ref)
        self.threshold = float(max(self.embedder.match_threshold, open_set or -1.0) - margin)
        self.eye = ray.get(eye_ref[0]) if eye_ref else None
        self.eye_recogniser = self.eye.recogniser() if self.eye else None

    def __call__(self, batch: dict) -> dict:
        batch, n = own_verdicts(batch), len(batch["sample_id"])
        similarity = np.full(n, np.nan, np.float32)
        todo = np.flatnonzero(~is_rejected(batch))
        if len(todo):
            embedded = self.embedder.embed([np.ascontiguousarray(batch["image"][i]) for i in todo])
            best, _ = self.index.max_similarity(embedded.vectors)
            for j, i in enumerate(todo):
                faces = int(embedded.faces_found[j])
                if faces == 0 or faces > 1:
                    reject(batch, i, "quality", "no face found" if faces == 0 else f"{faces} faces found",
                           faces, 1)
                    continue
                similarity[i] = best[j]
                if best[j] >= self.threshold:
                    reject(batch, i, "identity", f"too close to a real patient (cosine {best[j]:.3f})", best[j],
                           self.threshold)
        if self.eye is not None:
            reject_eye_matches(batch, self.eye, self.eye_recogniser)
        return {**batch, "nearest_similarity": similarity,
                "identity_threshold": np.full(n, self.threshold, np.float32)}


class MedicalPlausibility:
    """Actor: the medical classifier must see the conditioned disease; tumour images that pass get
    the segmenter's lesion mask (MeMa-Seg)."""

    def __init__(self, medical_uri: str, min_confidence: float = 0.0, settings: storage.S3Settings | None = None):
        self.model = MedicalNet.from_uri(medical_uri, settings)
        self.size = self.model.config.image_size
        self.min_confidence = min_confidence
        weights = storage.local_copy(medical_uri, settings) / "model.safetensors"
        self.mask_source = "segmenter:" + hashlib.sha256(weights.read_bytes()).hexdigest()[:16]

    def __call__(self, batch: dict) -> dict:
        batch, n = own_verdicts(batch), len(batch["sample_id"])
        predicted = np.array([""] * n, dtype=object)
        confidence = np.full(n, np.nan, np.float32)
        masks = np.array([b""] * n, dtype=object)
        todo = np.flatnonzero(~is_rejected(batch))
        if len(todo):
            images = torch.from_numpy(np.stack([cv2.resize(np.ascontiguousarray(batch["image"][i]),
                                                           (self.size, self.size), interpolation=cv2.INTER_CUBIC)
                                                for i in todo]))
            probabilities = self.model.classify(images)["disease"].numpy()
            lesions = self.model.segment(images).numpy()
            for j, i in enumerate(todo):
                wanted = DISEASES.index(batch["disease"][i])
                top = int(probabilities[j].argmax())
                predicted[i], confidence[i] = DISEASES[top], probabilities[j, top]
                if top != wanted:
                    reject(batch, i, "plausibility", f"the classifier sees {DISEASES[top]} "
                           f"(p={probabilities[j, top]:.2f}), not {batch['disease'][i]}",
                            probabilities[j, wanted], 0.5)
                elif probabilities[j, top] < self.min_confidence:
                    reject(batch, i, "plausibility", f"the classifier is unsure (p={probabilities[j, top]:.2f})",
                           probabilities[j, top], self.min_confidence)
                elif batch["disease"][i] == PERIOCULAR_TUMOUR:
                    side = batch["image"][i].shape[0]
                    mask = cv2.resize(lesions[j].astype(np.uint8) * 255, (side, side), interpolation=cv2.INTER_NEAREST)
                    masks[i] = codecs.encode(mask, "png")
        return {**batch, "predicted_disease": predicted, "disease_confidence": confidence, "lesion_mask": masks,
                "mask_source": np.array([self.mask_source if m else "" for m in masks], dtype=object)}
