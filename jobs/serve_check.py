"""Deploy the serving endpoint on the cluster and call it over HTTP as a clinic would.

    ray job submit -- python jobs/serve_check.py --model s3://models/deid --detector s3://models/detector \
        --photos s3://hospital/photos --output s3://reports/serve --secret-file /secure/serve.secret \
        --token-file /secure/recovery.token [--shared s3://share/photos]

Sends photos concurrently to /v1/deidentify (record id = key), restores them through /v1/recover,
and, with --shared, restores the archive job's copies by record id as well (the server's secret
being the archive's), each with its recovery data from the job's private store (<shared>-recovery/,
the job's default `separate` mode) or from the file (`embedded`). Writes serve-check.png and
serve-check.json under --output; exits non-zero unless every photo it de-identified, and every
archive copy it tried, came back.
"""

import argparse
import sys

from medeid.config import load_config
from medeid.raycluster import init_ray
from medeid.serve.check import check_endpoint


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="MedSem-DeID model folder or S3 prefix")
    parser.add_argument("--detector", required=True, help="face detector pack folder or S3 prefix")
    parser.add_argument("--photos", required=True, help="S3 prefix or folder of photos to send")
    parser.add_argument("--output", required=True, help="where serve-check.png and serve-check.json go")
    parser.add_argument("--secret-file", required=True, help="the server secret (record ids -> passwords)")
    parser.add_argument("--token-file", required=True, help="the recovery bearer token")
    parser.add_argument("--shared", help="the archive job's anonymized copy of --photos, to restore by record id")
    parser.add_argument("--requests", type=int, default=24, help="photos sent")
    parser.add_argument("--port", type=int, default=8000,
                        help="Serve's HTTP port on 127.0.0.1 (if it is not running yet)")
    parser.add_argument("--config", default="demo", help="preset name or YAML file (serve section, storage)")
    args = parser.parse_args()
    settings = load_config(args.config).storage.settings()

    init_ray()
    check = check_endpoint(args.model, args.detector, args.photos, args.output, args.secret_file, args.token_file,
                           shared_uri=args.shared, photos=args.requests, port=args.port, config=args.config,
                           settings=settings)
    deidentified = check.answered.get("200", 0)
    print(f"[serve] {check.sent} sent in {check.seconds:.1f} s (largest batch {check.largest_batch}): "
          f"{check.answered}; {check.restored} of {deidentified} restored through /v1/recover; "
          f"{check.archive_restored} of {check.archive_copies} archive copies restored by record id; "
          f"grid: {check.grid}", flush=True)
    every_copy = check.archive_restored == check.archive_copies and (check.archive_copies > 0 or not args.shared)
    return 0 if deidentified and check.restored == deidentified and every_copy else 1


if __name__ == "__main__":
    sys.exit(main())
