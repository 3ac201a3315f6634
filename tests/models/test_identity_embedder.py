"""Recogniser packs: exported in ArcFace's layout, loaded through insightface, as buffalo_l is."""

import json

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from medeid import storage
from medeid.models.export import export_recognizer_pack
from medeid.models.identity import PACK_METADATA, IdentityEmbedder
from medeid.models.recognizer import Recognizer, to_input
from medeid.synth import cohort_rows, render_row

# ONNX Runtime and torch disagree by float rounding only; embeddings are unit vectors.
TOLERANCE = 1e-5


def _trained_like(architecture: str, seed: int) -> Recognizer:
    """A recogniser with non-trivial batch-norm statistics, as after training."""
    torch.manual_seed(seed)
    model = Recognizer(architecture)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, 3, 112, 112))
    return model.eval()


def _faces(n: int, size: int = 112) -> list[np.ndarray]:
    return [render_row(row, 128).image[8:8 + size, 8:8 + size] for row in cohort_rows(n, 1, seed=5)]


@pytest.mark.parametrize("architecture", ["resnet", "mobile"])
def test_exported_pack_embeds_like_the_torch_model(tmp_path, architecture):
    model = _trained_like(architecture, seed=3)
    export_recognizer_pack(model, tmp_path, {"match_threshold": 0.42, "tar": 0.99})
    embedder = IdentityEmbedder(tmp_path)
    assert not embedder.has_detector and embedder.match_threshold == 0.42
    assert embedder.recognizer.input_mean == 127.5 and embedder.recognizer.input_std == 127.5  # ArcFace scaling
    faces = _faces(5)
    result = embedder.embed(faces)
    with torch.no_grad():
        expected = torch.nn.functional.normalize(model(to_input(torch.from_numpy(np.stack(faces))))).numpy()
    assert result.vectors.shape == (5, 512) and list(result.faces_found) == [-1] * 5
    assert np.abs(result.vectors - expected).max() < TOLERANCE
    assert np.allclose(np.linalg.norm(result.vectors, axis=1), 1, atol=1e-5)


def test_pack_loads_from_s3_through_a_node_cache(tmp_path, bucket, monkeypatch):
    monkeypatch.setenv("MEDEID_CACHE", str(tmp_path / "cache"))
    export_recognizer_pack(_trained_like("resnet", 1), tmp_path / "pack", {"match_threshold": 0.5})
    storage.copy_tree(str(tmp_path / "pack"), f"{bucket}/packs/r1")
    first = IdentityEmbedder.from_uri(f"{bucket}/packs/r1")
    second = IdentityEmbedder.from_uri(f"{bucket}/packs/r1")
    assert first.pack_dir == second.pack_dir and str(first.pack_dir).startswith(str(tmp_path / "cache"))
    faces = _faces(2)
    assert np.array_equal(first.embed(faces).vectors, IdentityEmbedder(tmp_path / "pack").embed(faces).vectors)


def test_missing_model_files_are_named(tmp_path, bucket):
    with pytest.raises(FileNotFoundError, match="w600k_r50.onnx"):
        IdentityEmbedder(tmp_path)
    (tmp_path / "notes.onnx").write_bytes(b"")
    with pytest.raises(Exception, match="notes.onnx"):
        IdentityEmbedder(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        IdentityEmbedder.from_uri(str(tmp_path / "absent"))
    with pytest.raises(FileNotFoundError, match=f"{bucket}/nothing-here"):
        IdentityEmbedder.from_uri(f"{bucket}/nothing-here")


class TinySCRFD(nn.Module):
    """An SCRFD-shaped detector (9 outputs: scores, boxes, keypoints at strides 8/16/32) for 128 px input.

    It reports one face, centred, whenever the image has any contrast, and none on a flat image:
    enough to drive insightface's detection, alignment and recognition path end to end.
    """

    SIZE = 128
    KPS = np.array([[-16, -14], [16, -14], [0, 4], [-13, 22], [13, 22]], np.float32)  # around the centre

    def __init__(self):
        super().__init__()
        for stride in (8, 16, 32):
            n = (self.SIZE // stride) ** 2 * 2
            centre = ((self.SIZE // stride // 2) * (self.SIZE // stride) + self.SIZE // stride // 2) * 2
            onehot = torch.zeros(n, 1)
            if stride == 32:
                onehot[centre] = 1
            self.register_buffer(f"onehot{stride}", onehot)
            self.register_buffer(f"box{stride}", torch.tensor([[44, 52, 44, 52]], dtype=torch.float32).repeat(n, 1)
                                 / stride)
            self.register_buffer(f"kps{stride}", torch.from_numpy(self.KPS.reshape(1, 10) / stride).repeat(n, 1))

    def forward(self, x):
        contrast = torch.sigmoid(200 * (x.std() - 0.02))
        scores = [getattr(self, f"onehot{s}") * contrast for s in (8, 16, 32)]
        return (*scores, *[getattr(self, f"box{s}") for s in (8, 16, 32)],
                *[getattr(self, f"kps{s}") for s in (8, 16, 32)])


def _buffalo_like_pack(directory, recognizer: Recognizer):
    """Lay out a pack as buffalo_l does: det_10g.onnx beside w600k_r50.onnx."""
    export_recognizer_pack(recognizer, directory, {"match_threshold": 0.3}, onnx_name="w600k_r50.onnx")
    names = [f"{kind}_{s}" for kind in ("score", "bbox", "kps") for s in (8, 16, 32)]
    torch.onnx.export(TinySCRFD(), (torch.zeros(1, 3, 128, 128),), str(directory / "det_10g.onnx"),
                      input_names=["input.1"], output_names=names, opset_version=17, dynamo=False)


def test_buffalo_layout_detects_aligns_and_embeds(tmp_path):
    from insightface.utils import face_align

    recognizer = _trained_like("resnet", 7)
    _buffalo_like_pack(tmp_path, recognizer)
    embedder = IdentityEmbedder(tmp_path)
    assert embedder.has_detector
    face = render_row(cohort_rows(1, 1, seed=2)[0], 128).image
    flat = np.full((128, 128, 3), 127, np.uint8)
    result = embedder.embed([face, flat])
    assert list(result.faces_found) == [1, 0]
    assert not result.vectors[1].any()
    # The same as aligning by hand with insightface's 5-point norm crop and running the recogniser.
    centre = np.array([64, 64], np.float32)
    aligned = face_align.norm_crop(cv2.cvtColor(face, cv2.COLOR_RGB2BGR), landmark=TinySCRFD.KPS + centre,
                                   image_size=112)
    with torch.no_grad():
        x = torch.from_numpy(cv2.cvtColor(aligned, cv2.COLOR_BGR2RGB)[None].copy())
        expected = torch.nn.functional.normalize(recognizer(to_input(x))).numpy()[0]
    assert np.abs(result.vectors[0] - expected).max() < 1e-4


def test_pack_metadata_is_written(tmp_path):
    export_recognizer_pack(_trained_like("mobile", 2), tmp_path, {"match_threshold": 0.61, "tar": 0.97})
    meta = json.loads((tmp_path / PACK_METADATA).read_text())
    assert meta["architecture"] == "mobile" and meta["match_threshold"] == 0.61
    assert len(meta["onnx_sha256"]) == 64 and (tmp_path / meta["recognition_model"]).exists()
