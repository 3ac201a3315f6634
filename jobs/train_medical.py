"""Train the medical model (Enc_med, disease/laterality/severity heads, lesion segmenter) and save it.

    ray job submit -- python jobs/train_medical.py --archive s3://bucket/archive --output s3://bucket/models/medical

The model folder holds config.json, model.safetensors and metrics.json (held-out figures);
checkpoints go to <runs>/medical, and a re-run resumes from them.
"""

import argparse
import json
import sys

from medeid.config import load_config
from medeid.raycluster import init_ray
from medeid.storage import join
from medeid.synth.conditions import DISEASES
from medeid.train.medical import train_medical


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archive", required=True, help="archive root with metadata/, photos/ and masks/")
    parser.add_argument("--output", required=True, help="folder or S3 prefix for the trained model")
    parser.add_argument("--runs", help="checkpoint storage (default <output>/../runs)")
    parser.add_argument("--config", default="demo", help="preset name or YAML file")
    parser.add_argument("--epochs", type=int)
    args = parser.parse_args()
    config = load_config(args.config, {"medical.epochs": args.epochs})
    print("config:", json.dumps(config.to_dict()["medical"]), flush=True)

    init_ray()
    runs = args.runs or join(args.output.rstrip("/").rsplit("/", 1)[0], "runs")
    figures = train_medical(args.archive, args.output, runs, "medical", config.medical, config.storage.settings())
    per_class = ", ".join(f"{d} {figures[f'accuracy_{d}']:.3f}" for d in DISEASES if f"accuracy_{d}" in figures)
    print(f"[train_medical] held-out disease accuracy {figures['disease_accuracy']:.4f} ({per_class}); "
          f"laterality {figures['laterality_accuracy']:.4f}, severity {figures['severity_accuracy']:.4f}; "
          f"tumour Dice {figures['tumour_dice']:.4f} over {figures['tumour_photos']} photos; model {figures['model']}",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
