"""Train MedSem-DeID on a synthetic-world archive's patients, on pairs the renderer draws, and save it.

    ray job submit -- python jobs/train_deid.py --archive s3://bucket/archive \
        --models s3://bucket/models --output s3://bucket/models/deid

<models> holds medical/ (Enc_med, frozen here) and recognizer/ (the training recogniser). The model
folder gets config.json, model.safetensors, metrics.json and samples.png; checkpoints and a sample
grid every few epochs go to <runs>/<name>, and a re-run resumes from them.
"""

import argparse
import json
import sys
import time

from medeid.config import load_config
from medeid.raycluster import init_ray
from medeid.storage import join
from medeid.train.deid import train_deid


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archive", required=True, help="archive root with metadata/ and photos/")
    parser.add_argument("--models", required=True, help="folder or S3 prefix with medical/ and recognizer/")
    parser.add_argument("--output", required=True, help="folder or S3 prefix for the trained model")
    parser.add_argument("--runs", help="checkpoint storage (default <models>/runs)")
    parser.add_argument("--name", default="deid", help="run name under <runs>")
    parser.add_argument("--config", default="demo", help="preset name or YAML file")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--without-enc-med", action="store_true", help="train the ablation without Enc_med")
    parser.add_argument("--pairs-per-photo", type=int, help="training targets drawn per photo (overrides the preset)")
    args = parser.parse_args()
    config = load_config(args.config, {"deid.epochs": args.epochs,
                                       "deid.use_enc_med": False if args.without_enc_med else None,
                                       "deid.pairs_per_photo": args.pairs_per_photo})
    print("config:", json.dumps(config.to_dict()["deid"]), flush=True)

    init_ray()
    started = time.monotonic()
    figures = train_deid(args.archive, args.models, args.output, args.runs or join(args.models, "runs"),
                         args.name, config.deid, config.storage.settings())
    print(f"[train_deid] {(time.monotonic() - started) / 60:.1f} min; held-out identity cosine "
          f"{figures['heldout_identity_cosine']:.3f}, disease agreement {figures['heldout_disease_agreement']:.3f}; "
          f"{figures['donors']} donors; model {figures['model']}, sample grids under {figures['run']}/samples",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
