"""Write the real-photo check set as an archive: the demo's real-photographs step starts here.

    ray job submit -- python jobs/make_real_photos.py --output s3://bucket/real-photos

The photos of `medeid/realfaces.py` (real portraits that installed packages carry, composed the way
clinics take them, and face-free pictures) under --output; their true face boxes in
`<output>-truth.json`, beside the photos so that the archive job lists only photos.
"""

import argparse
import sys
from collections import Counter

from medeid.config import load_config
from medeid.evaluate.real_photos import TRUTH_SUFFIX, write_check_set


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, help="S3 prefix or folder for the photos")
    parser.add_argument("--lfw-faces", type=int, default=100, help="LFW faces in the set (of 100)")
    parser.add_argument("--config", default="demo", help="preset name or YAML file (storage settings)")
    args = parser.parse_args()
    truth = write_check_set(args.output, load_config(args.config).storage.settings(), args.lfw_faces)
    kinds = Counter(entry["kind"] for entry in truth.values())
    faces = sum(len(entry["faces"]) for entry in truth.values())
    print(f"[make_real_photos] {len(truth)} photos, {faces} real faces, under {args.output} "
          f"(boxes in {args.output.rstrip('/')}{TRUTH_SUFFIX}): {dict(kinds)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
