"""Train the face recognisers on a (synthetic) archive and export them as insightface packs.

    ray job submit -- python jobs/train_identity.py --archive s3://bucket/archive --output s3://bucket/models

Writes <output>/recognizer (the pipeline's recogniser) and <output>/evaluator (another architecture
and seed, for evaluation only); checkpoints go to <runs>/<name>, and a re-run resumes from them.
"""

import argparse
import json
import sys

from medeid.config import load_config
from medeid.raycluster import init_ray
from medeid.storage import join
from medeid.train.identity import train_recognizer

ROLES = ("recognizer", "evaluator")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archive", required=True, help="archive root with metadata/ and photos/")
    parser.add_argument("--output", required=True, help="where the packs go: <output>/<role>")
    parser.add_argument("--runs", help="checkpoint storage (default <output>/runs)")
    parser.add_argument("--config", default="demo", help="preset name or YAML file")
    parser.add_argument("--roles", default=",".join(ROLES), help="comma-separated: recognizer,evaluator")
    parser.add_argument("--epochs", type=int, help="override both recognisers' epochs")
    args = parser.parse_args()
    config = load_config(args.config, {"identity.recognizer.epochs": args.epochs,
                                       "identity.evaluator.epochs": args.epochs})
    roles = [r for r in args.roles.split(",") if r]
    if set(roles) - set(ROLES):
        parser.error(f"--roles takes {ROLES}")
    print("config:", json.dumps(config.to_dict()["identity"]), flush=True)

    init_ray()
    runs = args.runs or join(args.output, "runs")
    for role in roles:
        figures = train_recognizer(args.archive, join(args.output, role), runs, f"identity-{role}",
                                   getattr(config.identity, role), config.storage.settings())
        print(f"[train_identity] {role}: TAR@FAR{figures['far']:g} = {figures['tar']:.4f}, match threshold "
              f"{figures['match_threshold']:.4f}, {figures['test_patients']} held-out patients; "
              f"pack {figures['pack']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
