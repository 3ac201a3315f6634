"""Train the tiny SCRFD-layout face detector on synthetic photos with Ray Train (DDP), export a pack.

Samples are drawn, not read: a face is a synthetic patient rendered with a wider pose than the
archive's camera (so the detector is not tied to the archive's framing), sometimes zoomed out onto a
cluttered background, with its box derived from its five landmarks (`face_box`); a negative is an
image with no face in it (flat colour, gradient, noise, shapes and strokes, or the scene of a zoomed-out
photo away from the face). The archive job fails closed on "no face", so the negatives are half the
point: the detector has to say no as reliably as it says yes.

Loss, per anchor (SCRFD's 2 per location at strides 8, 16, 32): focal loss on the face score, with an
anchor positive when its centre lies within 0.75 strides of the box centre (per axis) on a stride whose
scale range holds the box; GIoU and L1 on the box and L1 on the keypoints of positive anchors, in units
of the box side so every stride counts alike. Held-out figures: face recall (best detection at IoU >= 0.5),
mean eye-landmark error in pixels, and the share of face-free images with a detection.
"""

from __future__ import annotations

import dataclasses
import io
import tempfile
import time

import numpy as np
import ray
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from medeid import storage
from medeid.config import DetectorConfig
from medeid.models.detector import (
    INPUT_SIZE,
    STRIDES,
    DetectedFace,
    DetectorNet,
    FaceDetector,
    anchor_centres,
    export_detector_pack,
    flatten_anchors,
    to_input,
)
from medeid.synth.conditions import DISEASES, sample_condition
from medeid.synth.identity import SEXES, sample_identity
from medeid.synth.nuisance import sample_nuisance
from medeid.synth.render import MAX_SIZE, MIN_SIZE, render
from medeid.train.harness import read_state, run_training, train_epochs

COLUMNS = {"image": torch.uint8, "face": torch.float32, "box": torch.float32, "landmarks": torch.float32}
# A face box from its landmarks: square, 2 eye-to-mouth distances a side, centred 0.65 of the way
# from the eyes' midpoint to the mouth's. On the synthetic faces that spans brows to chin, cheek to cheek.
BOX_SIDE, BOX_CENTRE = 2.0, 0.65
# The box sides each stride predicts, in input pixels; they overlap so no face falls between two.
SCALE_RANGES = {8: (0.0, 64.0), 16: (32.0, 128.0), 32: (64.0, float("inf"))}
CENTRE_RADIUS = 0.75  # strides, per axis: 1 or 2 positive locations each way for a centre in the image
NEGATIVE_KINDS = ("flat", "gradient", "noise", "shapes", "strokes", "scene")
HELD_OUT_STREAM = 1_000_003  # added to the seed: held-out samples come from another stream, other people


# --- Samples ---------------------------------------------------------------------------------------

def face_box(landmarks: np.ndarray) -> np.ndarray:
    """(x1, y1, x2, y2) of the face whose five landmarks (ArcFace order) are given: see BOX_SIDE."""
    landmarks = np.asarray(landmarks, np.float32).reshape(5, 2)
    eyes, mouth = landmarks[:2].mean(0), landmarks[3:].mean(0)
    centre = eyes + BOX_CENTRE * (mouth - eyes)
    half = BOX_SIDE * float(np.linalg.norm(mouth - eyes)) / 2
    return np.array([centre[0] - half, centre[1] - half, centre[0] + half, centre[1] + half], np.float32)


def _colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 255, 3).astype(np.float32)


def _background(rng: np.random.Generator, size: int, kind: str) -> np.ndarray:
    """A face-free (size, size, 3) uint8 RGB image of one kind (see NEGATIVE_KINDS but 'scene')."""
    if kind == "flat":
        return np.broadcast_to(_colour(rng).astype(np.uint8), (size, size, 3)).copy()
    if kind == "gradient":
        angle = rng.uniform(0, 2 * np.pi)
        ramp = np.linspace(-1, 1, size, dtype=np.float32)
        t = np.clip((np.cos(angle) * ramp[None, :] + np.sin(angle) * ramp[:, None]) / 2 + 0.5, 0, 1)[..., None]
        return np.rint(_colour(rng) * (1 - t) + _colour(rng) * t).astype(np.uint8)
    if kind == "noise":
        noise = rng.normal(0, rng.uniform(10, 80), (size, size, 3)).astype(np.float32)
        image = Image.fromarray(np.clip(noise + _colour(rng), 0, 255).astype(np.uint8))
        return np.asarray(image.filter(ImageFilter.GaussianBlur(rng.uniform(0, 4))))
    image = Image.fromarray(_background(rng, size, str(rng.choice(["flat", "gradient"]))))
    draw = ImageDraw.Draw(image)
    if kind == "shapes":  # ellipses (eye- and head-like blobs), boxes and lines
        for _ in range(int(rng.integers(2, 9))):
            x0, y0 = rng.uniform(-0.2, 1.0, 2) * size
            w, h = rng.uniform(0.05, 0.6, 2) * size
            fill = tuple(int(c) for c in _colour(rng))
            shape = int(rng.integers(3))
            if shape == 0:
                draw.ellipse([x0, y0, x0 + w, y0 + h], fill=fill)
            elif shape == 1:
                draw.rectangle([x0, y0, x0 + w, y0 + h], fill=fill)
            else:
                draw.line([x0, y0, x0 + w, y0 + h], fill=fill, width=int(rng.integers(1, 6)))
    else:  # strokes: text-like marks, as on a label or a chart in the frame
        font = ImageFont.load_default(size=int(rng.integers(8, 28)))
        letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 -:/"
        for _ in range(int(rng.integers(1, 6))):
            text = "".join(rng.choice(list(letters), int(rng.integers(3, 14))))
            fill = tuple(int(c) for c in _colour(rng))
            draw.text(tuple(rng.uniform(-0.1, 0.9, 2) * size), text, fill=fill, font=font)
    return np.asarray(image)


def _patient_render(rng: np.random.Generator, size: int, zoom: float = 1.0):
    """A random patient photographed with a wider pose than the archive's camera."""
    disease = str(rng.choice(DISEASES))
    identity = sample_identity(rng, int(rng.integers(5, 90)), str(rng.choice(SEXES)))
    nuisance = dataclasses.replace(
        sample_nuisance(rng), rotation=float(rng.normal(0, 0.15)), scale=float(rng.uniform(0.85, 1.12)) * zoom,
        shift_x=float(rng.normal(0, 0.06)), shift_y=float(rng.normal(0, 0.06)), yaw=float(rng.normal(0, 0.35)))
    return render(identity, sample_condition(rng, disease), nuisance, size)


def _scene(rng: np.random.Generator, size: int) -> np.ndarray:
    """The scene of a zoomed-out photo away from the face: wall, shoulders, hair at the edges."""
    big = min(2 * size, MAX_SIZE)
    for _ in range(4):
        rendered = _patient_render(rng, big, zoom=float(rng.uniform(0.35, 0.55)))
        x1, y1, x2, y2 = face_box(rendered.landmarks)
        margin = 0.3 * (x2 - x1)
        crop = int(rng.integers(big // 4, big // 2 + 1))
        for _ in range(8):
            left, top = rng.integers(0, big - crop + 1, 2)
            if left > x2 + margin or left + crop < x1 - margin or top > y2 + margin or top + crop < y1 - margin:
                piece = Image.fromarray(rendered.image[top:top + crop, left:left + crop])
                return np.asarray(piece.resize((size, size), Image.BILINEAR))
    return _background(rng, size, "gradient")


def negative_sample(rng: np.random.Generator, size: int = INPUT_SIZE) -> np.ndarray:
    """An image with no face in it: (size, size, 3) uint8 RGB."""
    kind = str(rng.choice(NEGATIVE_KINDS))
    return _scene(rng, size) if kind == "scene" else _background(rng, size, kind)


def face_sample(rng: np.random.Generator, size: int = INPUT_SIZE,
                zoom_out: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A photo with one face: (size, size, 3) uint8 RGB and its (5, 2) landmarks in pixels."""
    if not zoom_out:
        rendered = _patient_render(rng, size)
        return rendered.image, rendered.landmarks
    small = int(rng.integers(MIN_SIZE, max(MIN_SIZE, int(size * 0.85)) + 1))
    rendered = _patient_render(rng, small)
    canvas = _background(rng, size, str(rng.choice(["flat", "gradient", "noise", "shapes", "strokes"]))).copy()
    left, top = rng.integers(0, size - small + 1, 2)
    canvas[top:top + small, left:left + small] = rendered.image
    return canvas, rendered.landmarks + np.array([left, top], np.float32)


def _jpeg(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Half the images pass through JPEG, as archive photos do."""
    if rng.uniform() < 0.5:
        return image
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=int(rng.integers(60, 96)))
    return np.asarray(Image.open(buffer).convert("RGB"))


def draw_samples(seed: int, start: int, count: int, size: int = INPUT_SIZE, negative_share: float = 0.3,
                 zoom_out_share: float = 0.3, grey_share: float = 0.15) -> dict[str, np.ndarray]:
    """Samples `start` .. `start + count` of the stream seeded `seed`: columns image (N, S, S, 3) uint8,
    face (N,) 1 or 0, box (N, 4) and landmarks (N, 10) in pixels (zeros without a face)."""
    images, faces, boxes, landmarks = [], [], [], []
    for index in range(start, start + count):
        rng = np.random.default_rng([seed, index])
        if rng.uniform() < negative_share:
            image, points = negative_sample(rng, size), None
        else:
            image, points = face_sample(rng, size, zoom_out=rng.uniform() < zoom_out_share)
        image = _jpeg(rng, image)
        if np.random.default_rng([seed, index, 1]).uniform() < grey_share:  # its own stream: the rest stay as drawn
            image = np.repeat(np.asarray(Image.fromarray(image).convert("L"))[..., None], 3, axis=2)
        images.append(image)
        faces.append(float(points is not None))
        boxes.append(face_box(points) if points is not None else np.zeros(4, np.float32))
        landmarks.append(points.reshape(10) if points is not None else np.zeros(10, np.float32))
    return {"image": np.stack(images), "face": np.asarray(faces, np.float32),
            "box": np.stack(boxes).astype(np.float32), "landmarks": np.stack(landmarks).astype(np.float32)}


def draw_batch(batch: dict, *, seed: int, size: int, negative_share: float, zoom_out_share: float,
               grey_share: float) -> dict:
    """Ray Data map_batches: sample ids (column `id`) -> drawn samples."""
    ids = batch["id"]
    out = [draw_samples(seed, int(i), 1, size, negative_share, zoom_out_share, grey_share) for i in ids]
    return {k: np.concatenate([o[k] for o in out]) for k in out[0]}


def sample_dataset(count: int, seed: int, cfg: DetectorConfig) -> ray.data.Dataset:
    """`count` samples of the stream seeded `seed`, drawn by Ray Data tasks and materialised."""
    return (ray.data.range(count, override_num_blocks=max(1, min(count // 100, 64)))
            .map_batches(draw_batch, fn_kwargs={"seed": seed, "size": cfg.input_size,
                                                "negative_share": cfg.negative_share,
                                                "zoom_out_share": cfg.zoom_out_share,
                                                "grey_share": cfg.grey_share},
                         batch_size=50, batch_format="numpy")
            .materialize())


# --- Targets and loss ------------------------------------------------------------------------------

def anchor_targets(boxes: torch.Tensor, landmarks: torch.Tensor, faces: torch.Tensor, size: int, stride: int):
    """Per anchor of one stride: positive (N, M) bool, and box distances (N, M, 4) and keypoint
    offsets (N, M, 10) in strides, the box side (N, 1) in pixels."""
    centres = anchor_centres(size, stride)  # (M, 2)
    box_centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    side = (boxes[:, 2] - boxes[:, 0]).clamp(min=1.0)
    low, high = SCALE_RANGES[stride]
    offset = (centres[None] - box_centre[:, None]).abs()  # (N, M, 2)
    positive = (offset.max(-1).values < CENTRE_RADIUS * stride) & (faces[:, None] > 0)
    positive &= ((side >= low) & (side < high))[:, None]
    distances = torch.cat([centres[None] - boxes[:, None, :2], boxes[:, None, 2:] - centres[None]], -1) / stride
    kps = (landmarks.view(-1, 1, 5, 2) - centres.view(1, -1, 1, 2)).reshape(len(boxes), -1, 10) / stride
    return positive, distances, kps, side[:, None]


def _giou_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - GIoU of boxes given as (left, top, right, bottom) distances from the same point."""
    pred = pred.clamp(min=0)
    area_p = (pred[:, 0] + pred[:, 2]) * (pred[:, 1] + pred[:, 3])
    area_t = (target[:, 0] + target[:, 2]) * (target[:, 1] + target[:, 3])
    inner = torch.minimum(pred, target)
    outer = torch.maximum(pred, target)
    intersection = (inner[:, 0] + inner[:, 2]) * (inner[:, 1] + inner[:, 3])
    union = area_p + area_t - intersection
    enclosing = (outer[:, 0] + outer[:, 2]) * (outer[:, 1] + outer[:, 3])
    iou = intersection / union.clamp(min=1e-6)
    return 1 - (iou - (enclosing - union) / enclosing.clamp(min=1e-6))


def detector_loss(levels, batch: dict, size: int) -> tuple[torch.Tensor, dict]:
    """Focal loss on every anchor's score; GIoU + L1 on boxes and L1 on keypoints of positive anchors."""
    score_loss, box_loss, kps_loss, positives = 0.0, 0.0, 0.0, 0
    for stride, (score, box, kps) in zip(STRIDES, levels):
        positive, distances, kps_target, side = anchor_targets(batch["box"], batch["landmarks"], batch["face"],
                                                               size, stride)
        logits = flatten_anchors(score)[..., 0]
        score_loss = score_loss + focal_loss(logits, positive.float()).sum()
        positives += int(positive.sum())
        if positive.any():
            scale = (stride / side).expand_as(positive)[positive][:, None]  # strides -> box sides
            pred_box, pred_kps = flatten_anchors(box)[positive], flatten_anchors(kps)[positive]
            target_box = distances[positive]
            box_loss = box_loss + _giou_loss(pred_box, target_box).sum() \
                + ((pred_box - target_box).abs() * scale).sum(1).sum()
            kps_loss = kps_loss + ((pred_kps - kps_target[positive]).abs() * scale).sum(1).sum()
    norm = max(positives, 1)
    # A batch with no positive anchor (all negatives) still touches every head: DDP needs whole graphs.
    touch = sum(b.sum() * 0 + k.sum() * 0 for _, b, k in levels)
    loss = score_loss / norm + 2.0 * box_loss / norm + 5.0 * kps_loss / norm + touch
    return loss, {"positives": positives}


def focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.25,
                           gamma: float = 2.0) -> torch.Tensor:
    """Sigmoid focal loss per element (Lin et al., 2017), as torchvision has it (no torchvision here)."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = p * target + (1 - p) * (1 - target)
    return ce * (1 - p_t) ** gamma * (alpha * target + (1 - alpha) * (1 - target))


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """uint8 NHWC -> network input, with per-image brightness and contrast jitter (boxes do not move)."""
    x = to_input(images)
    n = len(x)
    contrast = torch.empty(n, 1, 1, 1).uniform_(0.75, 1.25, generator=generator)
    brightness = torch.empty(n, 1, 1, 1).uniform_(-0.15, 0.15, generator=generator)
    return x * contrast + brightness


# --- Evaluation ------------------------------------------------------------------------------------

def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def detection_figures(detections: list[list[DetectedFace]], faces: np.ndarray, boxes: np.ndarray,
                      landmarks: np.ndarray) -> dict:
    """Held-out figures from each image's detections (best first) and its truth.

    face_recall: share of face images whose best detection has IoU >= 0.5 with the face;
    eye_error_px: mean distance of the two eye landmarks from the truth, over those found;
    extra_detections: share of face images with more than one detection;
    false_detection_rate: share of face-free images with any detection.
    """
    found, eye_errors, extra, false = [], [], [], []
    for dets, face, box, points in zip(detections, faces, boxes, landmarks):
        if not face:
            false.append(len(dets) > 0)
            continue
        extra.append(len(dets) > 1)
        hit = bool(dets) and box_iou(dets[0].box, box) >= 0.5
        found.append(hit)
        if hit:
            eye_errors.append(float(np.linalg.norm(dets[0].landmarks[:2] - points.reshape(5, 2)[:2], axis=1).mean()))
    return {"face_recall": float(np.mean(found)) if found else float("nan"),
            "eye_error_px": float(np.mean(eye_errors)) if eye_errors else float("nan"),
            "extra_detections": float(np.mean(extra)) if extra else float("nan"),
            "false_detection_rate": float(np.mean(false)) if false else float("nan"),
            "face_images": len(found), "face_free_images": len(false)}


def best_detections(net: DetectorNet, images: torch.Tensor, threshold: float) -> list[list[DetectedFace]]:
    """Each image's highest-scoring anchor, decoded as SCRFD does, if it clears `threshold` (no NMS:
    for in-training figures on one-face images the best anchor is the detection that matters)."""
    size = images.shape[1]
    scores, boxes, kpss = [], [], []
    for stride, (score, box, kps) in zip(STRIDES, net(to_input(images))):
        centres = anchor_centres(size, stride)
        scores.append(torch.sigmoid(flatten_anchors(score)[..., 0]))
        d = flatten_anchors(box) * stride
        boxes.append(torch.cat([centres - d[..., :2], centres + d[..., 2:]], -1))
        kpss.append((flatten_anchors(kps) * stride).view(len(images), -1, 5, 2) + centres[None, :, None])
    scores, boxes, kpss = torch.cat(scores, 1), torch.cat(boxes, 1), torch.cat(kpss, 1)
    best = scores.argmax(1)
    out = []
    for i, j in enumerate(best.tolist()):
        score = float(scores[i, j])
        out.append([DetectedFace(boxes[i, j].numpy(), score, kpss[i, j].numpy())] if score >= threshold else [])
    return out


def evaluate_net(net: DetectorNet, dataset, threshold: float, batch_size: int = 100) -> dict:
    """In-training held-out figures of the torch network (best anchor per image) on a Ray dataset."""
    detections, faces, boxes, landmarks = [], [], [], []
    for batch in dataset.iter_batches(batch_size=batch_size, batch_format="numpy"):
        detections += best_detections(net, torch.from_numpy(batch["image"]), threshold)
        faces.append(batch["face"]), boxes.append(batch["box"]), landmarks.append(batch["landmarks"])
    return detection_figures(detections, np.concatenate(faces), np.concatenate(boxes), np.concatenate(landmarks))


def evaluate_detector(detector: FaceDetector, samples: dict) -> dict:
    """Held-out figures of an exported detector, through insightface's SCRFD (NMS and all)."""
    detections = [detector.detect(image) for image in samples["image"]]
    return detection_figures(detections, samples["face"], samples["box"], samples["landmarks"])


# --- Training --------------------------------------------------------------------------------------

def _optimizer(params, lr: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)


def train_loop_per_worker(config: dict) -> None:
    import ray.train

    torch.manual_seed(config["seed"])
    generator = torch.Generator().manual_seed(config["seed"] + ray.train.get_context().get_world_rank())
    size = config["input_size"]

    def train_step(model, batch):
        return detector_loss(model(augment(batch["image"], generator)), batch, size)[0]

    train_epochs(DetectorNet(config["width"]), lambda params: _optimizer(params, config["lr"]), config, train_step,
                 lambda model, test, epoch: evaluate_net(model, test, config["det_thresh"]), COLUMNS,
                 "train_detector")


def train_in_process(cfg: DetectorConfig, samples: dict, steps: int | None = None) -> DetectorNet:
    """The same loss, schedule and augmentation without Ray: for tests and quick experiments on one core.

    One thread: beside another busy process, two OpenMP threads on two cores ran 30x slower here.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _fit(cfg, samples, steps)
    finally:
        torch.set_num_threads(threads)


def train_briefly(samples: int = 900, steps: int = 480) -> DetectorNet:
    """A detector trained in process for ~40 s on two cores, on frontal faces: enough for the tests'
    and benchmarks' archives, not the demo's (`train_detector` runs the full recipe on Ray)."""
    config = DetectorConfig(seed=3, zoom_out_share=0.0, lr=0.01)
    return train_in_process(config, draw_samples(config.seed, 0, samples, config.input_size, config.negative_share,
                                                 0.0), steps=steps)


def _fit(cfg: DetectorConfig, samples: dict, steps: int | None) -> DetectorNet:
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    net = DetectorNet(cfg.width)
    n = len(samples["image"])
    steps = steps or max(1, cfg.epochs * (n // cfg.batch_size))
    optimizer = _optimizer(net.parameters(), cfg.lr)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, cfg.lr, total_steps=steps, pct_start=0.15)
    tensors = {k: torch.from_numpy(samples[k]) for k in COLUMNS}
    net.train()
    for step in range(steps):
        if step % max(1, n // cfg.batch_size) == 0:
            order = torch.randperm(n, generator=generator)
        at = (step % max(1, n // cfg.batch_size)) * cfg.batch_size
        batch = {k: v[order[at:at + cfg.batch_size]] for k, v in tensors.items()}
        loss = detector_loss(net(augment(batch["image"], generator)), batch, cfg.input_size)[0]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
    return net.eval()


def train_detector(pack_uri: str, runs_uri: str, name: str, cfg: DetectorConfig,
                   settings: storage.S3Settings | None = None, fail_after_epoch: int | None = None) -> dict:
    """Train on drawn samples, evaluate on held-out ones (other seeds), export the pack to `pack_uri`."""
    started = time.monotonic()
    datasets = {"train": sample_dataset(cfg.train_samples, cfg.seed, cfg),
                "test": sample_dataset(cfg.test_samples, cfg.seed + HELD_OUT_STREAM, cfg)}
    config = {**dataclasses.asdict(cfg), "fail_after_epoch": fail_after_epoch,
              "steps_per_epoch": cfg.train_samples // (cfg.batch_size * cfg.num_workers)}
    result = run_training(train_loop_per_worker, config, name=name, storage_uri=runs_uri, datasets=datasets,
                          num_workers=cfg.num_workers, settings=settings)
    metrics = dict(result.metrics)
    net = DetectorNet(cfg.width)
    net.load_state_dict(read_state(result.checkpoint)["model"])
    held_out = datasets["test"].take_batch(cfg.test_samples, batch_format="numpy")
    with tempfile.TemporaryDirectory() as directory:
        export_detector_pack(net.eval(), directory, {"det_thresh": cfg.det_thresh}, input_size=cfg.input_size)
        figures = evaluate_detector(FaceDetector(directory), held_out)
        info = {"det_thresh": cfg.det_thresh, "held_out": figures, "config": dataclasses.asdict(cfg),
                "train_s": time.monotonic() - started, "box": {"side": BOX_SIDE, "centre": BOX_CENTRE}}
        export_detector_pack(net.eval(), directory, info, input_size=cfg.input_size)
        storage.copy_tree(directory, pack_uri, settings)
    return {**info, "pack": pack_uri, "run": storage.join(runs_uri, name), "final_epoch": metrics["epoch"],
            "steps": metrics["step"], "start_epoch": metrics["start_epoch"], "training_metrics": metrics}
