"""Identity embeddings through insightface, from a model pack in ArcFace's layout.

A pack is a folder (local, or an S3 prefix copied once per node) of ONNX files as insightface
lays them out, e.g. `buffalo_l`: `det_10g.onnx` (SCRFD detector) and `w600k_r50.onnx` (ArcFace
recogniser). `pack.json`, when present, carries medeid's metadata: the recogniser's verification
figures and its match threshold. Loading goes through `insightface.model_zoo` and `FaceAnalysis`;
nothing is ever downloaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from medeid import storage

PACK_METADATA = "pack.json"
INPUT_SIZE = 112


@dataclass(frozen=True)
class Embeddings:
    vectors: np.ndarray  # (N, D) float32, L2-normalised; zeros where no face was found
    faces_found: np.ndarray  # (N,) int: faces the detector found; -1 without a detector (centred crop)


def read_pack_metadata(pack_dir: Path) -> dict:
    path = Path(pack_dir) / PACK_METADATA
    return json.loads(path.read_text()) if path.exists() else {}


def central_square(height: int, width: int) -> tuple[int, int, int]:
    """(top, left, side) of an image's central square."""
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side


def centred_crop(image: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """The central square of an image (RGB or a single-channel mask), resized to `size` (area interpolation)."""
    top, left, side = central_square(*image.shape[:2])
    square = image[top:top + side, left:left + side]
    if side == size:
        return np.ascontiguousarray(square)
    return cv2.resize(square, (size, size), interpolation=cv2.INTER_AREA)


def _providers() -> list[str]:
    from insightface.model_zoo.onnxruntime_utils import get_default_providers

    return get_default_providers()


class IdentityEmbedder:
    """L2-normalised face embeddings for batches of RGB images.

    With a detector in the pack it detects, aligns (insightface's 5-point norm crop) and embeds
    the largest face of each image; without one it embeds the centred crop.
    """

    def __init__(self, pack_dir: str | Path, det_size: int = 128, det_thresh: float = 0.5):
        from insightface.app import FaceAnalysis
        from insightface.model_zoo import model_zoo

        self.pack_dir = Path(pack_dir)
        self.metadata = read_pack_metadata(self.pack_dir)
        onnx_files = sorted(self.pack_dir.glob("*.onnx"))
        if not onnx_files:
            raise FileNotFoundError(f"no ONNX model in {self.pack_dir}: expected a recognition model such as "
                                    f"w600k_r50.onnx (and optionally a detector such as det_10g.onnx)")
        models = {}
        for path in onnx_files:
            model = model_zoo.get_model(str(path), providers=_providers())
            if model is not None:
                models.setdefault(model.taskname, model)
        if "recognition" not in models:
            raise FileNotFoundError(f"no recognition model among {[p.name for p in onnx_files]} in {self.pack_dir}: "
                                    f"expected an ArcFace-layout ONNX file (square input >= 112, one output)")
        self.has_detector = "detection" in models
        self.app = None
        if self.has_detector:
            self.app = FaceAnalysis(name=str(self.pack_dir), allowed_modules=["detection", "recognition"],
                                    providers=_providers())
            self.app.prepare(ctx_id=-1, det_thresh=det_thresh, det_size=(det_size, det_size))
            self.recognizer = self.app.models["recognition"]
        else:
            self.recognizer = models["recognition"]
        self.dim = int(self.recognizer.output_shape[-1])

    @classmethod
    def from_uri(cls, uri: str, settings: storage.S3Settings | None = None, **kwargs) -> "IdentityEmbedder":
        return cls(storage.local_copy(uri, settings), **kwargs)

    @property
    def match_threshold(self) -> float | None:
        """Cosine similarity above which two faces are the same person (at the pack's FAR)."""
        value = self.metadata.get("match_threshold")
        return None if value is None else float(value)

    def embed(self, images: list[np.ndarray]) -> Embeddings:
        """Embed RGB uint8 images of any size."""
        if not len(images):
            return Embeddings(np.zeros((0, self.dim), np.float32), np.zeros(0, int))
        if self.app is None:
            crops = [cv2.cvtColor(centred_crop(image), cv2.COLOR_RGB2BGR) for image in images]
            vectors = self.recognizer.get_feat(crops)
            return Embeddings(_normalise(vectors), np.full(len(images), -1))
        vectors, found = np.zeros((len(images), self.dim), np.float32), np.zeros(len(images), int)
        for i, image in enumerate(images):
            faces = self.app.get(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            found[i] = len(faces)
            if faces:
                largest = max(faces, key=lambda f: (f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1]))
                vectors[i] = largest.normed_embedding
        return Embeddings(vectors, found)


def _normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
