"""Check the archive job's output on the real check set with a real recogniser it never trains against.

    ray job submit -- python jobs/check_real_photos.py --photos s3://bucket/real-photos \
        --shared s3://bucket/real-photos-anonymized --output s3://bucket/real-photos-check

Each true face of `jobs/make_real_photos.py`'s set against its anonymized copy (found through the
job's manifest, `<shared>-manifest`) under dlib's ResNet descriptor (test extras); writes `report.md`
and `faces.png` (real faces beside their copies, closest first) under --output, which is the hospital's
side: the sources are real people. Exits 0 when the check ran (the report says PASS or FAIL).
"""

import argparse
import sys

from medeid.config import load_config
from medeid.evaluate.real_photos import check_shared, write_check_report
from medeid.evaluate.real_recogniser import MATCHED


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", required=True, help="the check set (jobs/make_real_photos.py --output)")
    parser.add_argument("--shared", required=True, help="the archive job's --output over those photos")
    parser.add_argument("--output", required=True, help="where the report and its picture go")
    parser.add_argument("--config", default="demo", help="preset name or YAML file (storage settings)")
    args = parser.parse_args()
    settings = load_config(args.config).storage.settings()
    check = check_shared(args.photos, args.shared, settings)
    uri = write_check_report(check, args.output, settings)
    verdicts = check.verdicts()
    print(f"[check_real_photos] {len(check.faces)} real faces in {check.photos} photos: "
          f"{dict(verdicts)}; matched their source: {verdicts[MATCHED]} (bar: 0). Report: {uri}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
