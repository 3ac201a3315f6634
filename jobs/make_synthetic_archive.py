"""Write a synthetic hospital archive: patient photos, lesion masks, metadata and a contact sheet.

    ray job submit -- python jobs/make_synthetic_archive.py --output s3://bucket/archive
"""

import argparse
import json
import sys

from medeid.config import load_config
from medeid.pipelines.synthetic_archive import CONTACT_SHEET, SAMPLES, build_archive, summarize
from medeid.raycluster import init_ray
from medeid.storage import join


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, help="archive root: s3://bucket/prefix or a local folder")
    parser.add_argument("--config", default="demo", help="preset name or YAML file")
    parser.add_argument("--patients", type=int)
    parser.add_argument("--photos-per-patient", type=int)
    parser.add_argument("--size", type=int, help="image size in pixels (64..256)")
    parser.add_argument("--seed", type=int)
    args = parser.parse_args()
    config = load_config(args.config, {"archive.patients": args.patients,
                                       "archive.photos_per_patient": args.photos_per_patient,
                                       "archive.size": args.size, "archive.seed": args.seed})
    print("config:", json.dumps(config.to_dict()), flush=True)

    init_ray()
    a = config.archive
    result = build_archive(args.output, a.patients, a.photos_per_patient, a.size, a.seed, config.storage.settings())

    print(json.dumps(summarize(result.metadata), indent=1))
    print(f"photos: requested {result.requested} = written {result.written} + quarantined {result.quarantined}"
          f" + skipped {result.skipped}: {'reconciled' if result.reconciled else 'NOT RECONCILED'}")
    print(f"archive: {args.output}\ncontact sheet: {join(args.output, CONTACT_SHEET)}\n"
          f"samples: {join(args.output, SAMPLES)}")
    return 0 if result.reconciled else 1


if __name__ == "__main__":
    sys.exit(main())
