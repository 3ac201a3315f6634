"""Train the tiny SCRFD-layout face detector on synthetic photos and export it as a pack.

    ray job submit -- python jobs/train_detector.py --output s3://bucket/models/detector

No archive is read: faces and face-free images are drawn from the synthetic world. The pack holds
det_medeid.onnx (loaded by insightface as SCRFD) and detector.json (threshold, held-out figures);
checkpoints go to <runs>/detector, and a re-run resumes from them.
"""

import argparse
import dataclasses
import json
import sys

from medeid.config import load_config
from medeid.raycluster import init_ray
from medeid.storage import join
from medeid.train.detector import train_detector


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, help="folder or S3 prefix for the detector pack")
    parser.add_argument("--runs", help="checkpoint storage (default <output>/../runs)")
    parser.add_argument("--config", default="demo", help="preset name or YAML file (detector section, storage settings)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--train-samples", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--det-thresh", type=float)
    args = parser.parse_args()
    overrides = {"epochs": args.epochs, "train_samples": args.train_samples, "seed": args.seed,
                 "det_thresh": args.det_thresh}
    config = load_config(args.config)
    cfg = dataclasses.replace(config.detector, **{k: v for k, v in overrides.items() if v is not None})
    print("config:", json.dumps(dataclasses.asdict(cfg)), flush=True)

    init_ray()
    runs = args.runs or join(args.output.rstrip("/").rsplit("/", 1)[0], "runs")
    figures = train_detector(args.output, runs, "detector", cfg, config.storage.settings())
    held_out = figures["held_out"]
    print(f"[train_detector] held-out face recall (IoU >= 0.5) {held_out['face_recall']:.4f} over "
          f"{held_out['face_images']} photos, eye landmarks {held_out['eye_error_px']:.2f} px off, false detections "
          f"on {held_out['false_detection_rate']:.4f} of {held_out['face_free_images']} face-free images; "
          f"threshold {figures['det_thresh']}; {figures['train_s']:.0f} s; pack {figures['pack']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
