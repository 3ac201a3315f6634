"""The tiny face detector: SCRFD's layout as insightface loads it, a short training that finds faces
and refuses face-free images, and its pack through a local folder and S3."""

import json

import numpy as np
import pytest
import torch

from medeid import storage
from medeid.models.detector import (
    METADATA,
    DetectorNet,
    FaceDetector,
    ScrfdGraph,
    export_detector_pack,
)
from medeid.synth import cohort_rows, render_row
from medeid.train.detector import (
    DetectorConfig,
    best_detections,
    box_iou,
    face_box,
)

SIZE = 128


def face_free_images() -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    ramp = np.linspace(0, 1, SIZE, dtype=np.float32)[None, :, None]
    return ([np.full((SIZE, SIZE, 3), value, np.uint8) for value in (0, 127, 230)]
            + [np.full((SIZE, SIZE, 3), (200, 180, 160), np.uint8)]
            + [rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8) for _ in range(3)]
            + [np.clip(rng.normal(128, 20, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)]
            + [np.broadcast_to(np.rint(a * (1 - ramp) + b * ramp), (SIZE, SIZE, 3)).astype(np.uint8)
               for a, b in (((20, 40, 60), (220, 230, 240)), ((250, 210, 190), (90, 60, 40)))])


def held_out_photos(count: int = 24) -> list:
    """Archive photos (the archive's camera and cohort), of people the training never drew."""
    return [render_row(row, SIZE) for row in cohort_rows(count, 1, seed=4242)]


@pytest.fixture(scope="module")
def trained(trained_detector):
    return trained_detector  # tests/conftest.py: trained once a session


def test_export_loads_through_insightface_as_scrfd(tmp_path):
    from insightface.model_zoo import model_zoo
    from insightface.model_zoo.scrfd import SCRFD

    export_detector_pack(DetectorNet(8), tmp_path, {"det_thresh": 0.4})
    meta = json.loads((tmp_path / METADATA).read_text())
    model = model_zoo.get_model(str(tmp_path / meta["detection_model"]), providers=["CPUExecutionProvider"])
    assert isinstance(model, SCRFD)
    assert model.use_kps and model.fmc == 3 and model._num_anchors == 2 and model.input_size == (SIZE, SIZE)
    outputs = [o.shape for o in model.session.get_outputs()]
    cells = [(SIZE // s) ** 2 * 2 for s in (8, 16, 32)]
    assert outputs == [[n, k] for k in (1, 4, 10) for n in cells]
    assert meta["det_thresh"] == 0.4 and len(meta["onnx_sha256"]) == 64
    with pytest.raises(ValueError, match="det_thresh"):
        export_detector_pack(DetectorNet(8), tmp_path, {})


def test_exported_scores_are_probabilities():
    with torch.no_grad():
        outputs = ScrfdGraph(DetectorNet(8).eval())(torch.zeros(1, 3, SIZE, SIZE))
    assert [tuple(o.shape) for o in outputs[:3]] == [(512, 1), (128, 1), (32, 1)]
    assert all(0 <= float(o.min()) and float(o.max()) <= 1 for o in outputs[:3])


def test_untrained_detector_finds_nothing(tmp_path):
    export_detector_pack(DetectorNet(16), tmp_path, {"det_thresh": 0.5})
    detector = FaceDetector(tmp_path)
    assert not any(detector.detect(photo.image) for photo in held_out_photos(6))


def test_short_training_finds_held_out_faces_and_refuses_face_free_images(trained):
    _, pack = trained
    detector = FaceDetector(pack)
    assert detector.det_thresh == 0.5
    ious, eye_errors, counts = [], [], []
    for photo in held_out_photos():
        faces = detector.detect(photo.image)
        counts.append(len(faces))
        if faces:
            ious.append(box_iou(faces[0].box, face_box(photo.landmarks)))
            eye_errors.append(np.linalg.norm(faces[0].landmarks[:2] - photo.landmarks[:2], axis=1).mean())
    found = np.asarray(ious) >= 0.5
    assert found.sum() >= 0.85 * len(counts), (ious, counts)
    assert np.median(eye_errors) < 3.0 and np.mean(eye_errors) < 4.0, eye_errors  # pixels, at 128 px
    assert np.mean(np.asarray(counts) == 1) >= 0.85, counts  # one face, not several
    assert all(face.landmarks.shape == (5, 2) and 0.5 <= face.score <= 1 for face in detector.detect(
        held_out_photos(1)[0].image))
    false = [len(detector.detect(image)) for image in face_free_images()]
    assert sum(false) == 0, false
    # The archive's larger photos: SCRFD scales them to the model's input, boxes come back in their pixels.
    row = cohort_rows(1, 1, seed=4242)[0]
    large = render_row(row, 256)
    faces = detector.detect(large.image)
    assert faces and box_iou(faces[0].box, face_box(large.landmarks)) >= 0.5


def test_pack_round_trips_through_a_folder_and_s3(trained, tmp_path, bucket, monkeypatch):
    net, pack = trained
    monkeypatch.setenv("MEDEID_CACHE", str(tmp_path / "cache"))
    photos = [p.image for p in held_out_photos(4)] + face_free_images()[:2]
    reference = [FaceDetector(pack).detect(image) for image in photos]

    uri = f"{bucket}/models/detector"
    storage.copy_tree(str(pack), uri)
    for loaded in (FaceDetector.from_uri(str(pack)), FaceDetector.from_uri(uri)):
        assert loaded.metadata["note"] == "test" and loaded.det_thresh == 0.5
        again = [loaded.detect(image) for image in photos]
        assert [len(d) for d in again] == [len(d) for d in reference]
        for first, second in zip(reference, again):
            for a, b in zip(first, second):
                assert np.array_equal(a.box, b.box) and np.array_equal(a.landmarks, b.landmarks)
    # The ONNX graph is the torch network: its best anchor is the detection insightface reports.
    with torch.no_grad():
        best = best_detections(net, torch.from_numpy(np.stack(photos[:4])), 0.5)
    for mine, theirs in zip(best, reference[:4]):
        assert len(mine) == 1 and len(theirs) >= 1
        assert np.abs(mine[0].box - theirs[0].box).max() < 1e-3
        assert np.abs(mine[0].landmarks - theirs[0].landmarks).max() < 1e-3
    # A caller's threshold overrides the pack's.
    assert FaceDetector(pack, det_thresh=0.99).det_thresh == 0.99


def test_face_box_follows_the_landmarks():
    landmarks = np.array([[40, 50], [80, 50], [60, 70], [45, 90], [75, 90]], np.float32)
    x1, y1, x2, y2 = face_box(landmarks)
    assert x2 - x1 == pytest.approx(80) and y2 - y1 == pytest.approx(80)  # 2 eye-to-mouth distances
    assert (x1 + x2) / 2 == pytest.approx(60) and (y1 + y2) / 2 == pytest.approx(76)


@pytest.mark.slow
def test_ray_train_run_exports_a_pack_with_held_out_figures(ray_session, bucket, tmp_path, monkeypatch):
    """The job's path: drawn samples through Ray Data, DDP through the harness, checkpoints and pack on S3."""
    from medeid.train.detector import train_detector

    monkeypatch.setenv("MEDEID_CACHE", str(tmp_path / "cache"))
    cfg = DetectorConfig(train_samples=128, test_samples=24, epochs=2, batch_size=16, eval_every=1)
    figures = train_detector(f"{bucket}/models/detector", f"{bucket}/runs", "detector-test", cfg)
    assert figures["final_epoch"] == 1 and figures["steps"] == 8
    held_out = figures["held_out"]
    assert held_out["face_images"] + held_out["face_free_images"] == 24
    assert 0 <= held_out["false_detection_rate"] <= 1 and 0 <= held_out["face_recall"] <= 1
    assert storage.list_files(f"{bucket}/runs/detector-test")
    detector = FaceDetector.from_uri(figures["pack"])
    saved = detector.metadata["held_out"]  # eye_error_px is NaN when two epochs find no face
    assert saved["face_recall"] == held_out["face_recall"] and detector.det_thresh == cfg.det_thresh
    assert isinstance(detector.detect(held_out_photos(1)[0].image), list)
