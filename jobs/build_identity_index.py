"""Embed every photo of a real-patient archive into the identity index that synthetic faces are checked against.

    ray job submit -- python jobs/build_identity_index.py --archive s3://bucket/archive \
        --pack s3://bucket/models/recognizer --output s3://bucket/identity-index
"""

import argparse
import json
import sys

from medeid.config import load_config
from medeid.pipelines.identity_index import build_identity_index
from medeid.raycluster import init_ray


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archive", required=True, help="archive root (with metadata/*.parquet): s3:// or a folder")
    parser.add_argument("--pack", required=True, help="recogniser pack in ArcFace's layout: s3:// or a folder")
    parser.add_argument("--output", required=True, help="index root; photos set aside go to <output>_quarantine")
    parser.add_argument("--workers", type=int, default=1, help="embedding actors, half a CPU each")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--config", default="demo", help="preset name or YAML file (for storage settings)")
    args = parser.parse_args()
    config = load_config(args.config)
    print("config:", json.dumps(config.to_dict()), flush=True)

    init_ray()
    result = build_identity_index(args.archive, args.pack, args.output, config.storage.settings(),
                                  batch_size=args.batch_size, workers=args.workers)

    print(json.dumps(result, indent=1))
    print(f"photos: inputs {result['inputs']} = written {result['written']} + quarantined {result['quarantined']}"
          f" + skipped {result['skipped']}: {'reconciled' if result['reconciled'] else 'NOT RECONCILED'}")
    return 0 if result["reconciled"] else 1


if __name__ == "__main__":
    sys.exit(main())
