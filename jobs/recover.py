"""Restore chosen photos of an anonymized archive with the archive secret.

    python jobs/recover.py --manifest s3://share/photos-manifest --keys "2024/a.jpg,2024/b.png" \
        --model s3://models/deid --secret-file /secure/archive.secret --output s3://restricted/restored

Reads each key's anonymized file (checked against the manifest's sha256), opens its sealed
originals with that file's password (derived from the secret and the key) and writes the photo
with its faces restored under --output. The seals come from where the manifest says the job kept
them: the recovery store <anonymized>-recovery/ (the default, `separate`; --recovery-store names
another place) or the file itself (`embedded`). A file written with `none` cannot be restored, and
says so. Prints one status per key.
"""

import argparse
import sys

from medeid.config import load_config
from medeid.pipelines.anonymize import SECRET_VARIABLE, ArchiveLayout, archive_secret, recover_photos


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", required=True, help="the job's manifest prefix (<output>-manifest)")
    parser.add_argument("--keys", required=True, help="comma-separated input keys to restore")
    parser.add_argument("--model", required=True, help="the MedSem-DeID model the job used")
    parser.add_argument("--output", required=True, help="where restored photos go (same keys)")
    parser.add_argument("--anonymized", help="the anonymized copy (default: the manifest prefix without -manifest)")
    parser.add_argument("--recovery-store", help="the job's recovery store (default: <anonymized>-recovery)")
    parser.add_argument("--secret-file", help=f"file holding the archive secret (else ${SECRET_VARIABLE})")
    parser.add_argument("--config", default="demo", help="preset name or YAML file (storage settings)")
    args = parser.parse_args()
    secret = archive_secret(args.secret_file)
    try:
        layout = ArchiveLayout.of_manifest(args.manifest, args.anonymized, args.recovery_store)
    except ValueError as error:
        parser.error(f"{error} (--anonymized)")
    keys = [k for k in args.keys.split(",") if k]
    settings = load_config(args.config).storage.settings()
    statuses = recover_photos(layout, keys, args.output, args.model, secret, settings)
    for key, status in statuses.items():
        print(f"[recover] {key}: {status}", flush=True)
    restored = sum(status == "recovered" for status in statuses.values())
    print(f"[recover] {restored} of {len(keys)} restored into {args.output}", flush=True)
    return 0 if restored == len(keys) else 1


if __name__ == "__main__":
    sys.exit(main())
