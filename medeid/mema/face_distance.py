"""How far MeMa's faces lie from the real ones: the Fréchet distance between Gaussians fitted to the
held-out evaluator's embeddings (FID's formula, on a face recogniser's features instead of Inception's).

A figure alone means little: its size depends on the embedding and on how many images it is fitted
to. So the real patients are split in two halves by patient, and the reference is the distance from
photos of half A to half B, with as many photos of A as MeMa released; MeMa's figure is from its
released images to the same half B. The bar (DESIGN §3) asks MeMa's figure to be at most twice the
reference. Both are averaged over REPEATS draws of the halves and of A's photos.

Writes `audit/face_distance.json`; no real photo is named in it.
"""

from __future__ import annotations

import json

import numpy as np
import ray
from scipy import linalg

from medeid import codecs, storage
from medeid.models.identity import IdentityEmbedder
from medeid.models.identity_index import IdentityIndex

FACE_DISTANCE = "audit/face_distance.json"
REPEATS = 5
ACTOR_CPUS = 0.5


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2) of Gaussians fitted to the rows of `a` and `b`."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"a Fréchet distance needs at least two rows on each side, got {len(a)} and {len(b)}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    sigma_a, sigma_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root, _ = linalg.sqrtm(sigma_a @ sigma_b, disp=False)
    if not np.isfinite(root).all():  # a singular product (few rows): nudge both, as pytorch-fid does
        eye = np.eye(len(mu_a)) * 1e-6
        root = linalg.sqrtm((sigma_a + eye) @ (sigma_b + eye))
    root = root.real  # the imaginary part is numerical noise
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(sigma_a) + np.trace(sigma_b) - 2 * np.trace(root))


def face_distances(released: np.ndarray, real: np.ndarray, patients: np.ndarray, repeats: int = REPEATS,
                   seed: int = 0) -> dict:
    """MeMa's distance to half the real patients against a real half's distance to the other half."""
    rng = np.random.default_rng(seed)
    people = np.unique(patients)
    if len(people) < 4:
        raise ValueError(f"the real-vs-real reference needs at least 4 patients, got {len(people)}")
    mema, reference = [], []
    for _ in range(repeats):
        half = rng.permutation(people)[: len(people) // 2]
        in_a = np.isin(patients, half)
        a, b = real[in_a], real[~in_a]
        n = min(len(released), len(a))  # the same number of images on the compared side of both
        mema.append(frechet_distance(released[rng.choice(len(released), n, replace=False)], b))
        reference.append(frechet_distance(a[rng.choice(len(a), n, replace=False)], b))
    return {"mema_to_real": float(np.mean(mema)), "real_to_real": float(np.mean(reference)),
            "ratio": float(np.mean(mema) / np.mean(reference)), "images": int(n), "repeats": repeats,
            "real_photos": int(len(real)), "real_patients": int(len(people))}


class EmbedReleased:
    """Actor: the evaluator's embedding of each released image."""

    def __init__(self, pack_uri: str, settings: storage.S3Settings | None = None):
        self.embedder = IdentityEmbedder.from_uri(pack_uri, settings)

    def __call__(self, batch: dict) -> dict:
        images = [codecs.decode(b) for b in batch["image"]]
        return {"embedding": self.embedder.embed(images).vectors.astype(np.float32)}


def measure_face_distance(shards_uri: str, pack_uri: str, index_uri: str, output_uri: str,
                          settings: storage.S3Settings | None = None) -> dict:
    """Embed the released images with the evaluator, compare them with the real photos of its index,
    write the figures to `<output>/audit/face_distance.json` and return them."""
    fs, path = storage.filesystem(shards_uri, settings)
    batches = (ray.data.read_parquet(path, filesystem=fs, columns=["image"])
               .map_batches(EmbedReleased, fn_constructor_args=(pack_uri, settings), batch_size=64,
                            batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=1), num_cpus=ACTOR_CPUS)
               .iter_batches(batch_size=None, batch_format="numpy"))
    released = np.concatenate([b["embedding"] for b in batches])
    index = IdentityIndex.from_uri(index_uri, settings)
    real = np.asarray(index.embeddings, dtype=np.float32)
    figures = face_distances(released, real, np.asarray(index.patient_ids.to_pylist(), dtype=object))
    storage.write_bytes(storage.join(output_uri, FACE_DISTANCE), json.dumps(figures, indent=1).encode(), settings)
    return figures
