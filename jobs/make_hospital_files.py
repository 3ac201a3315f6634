"""Write a synthetic hospital archive of files: the archive job's demo input.

    ray job submit -- python jobs/make_hospital_files.py --output s3://bucket/hospital-files

Patient photos from the synthetic cohort as JPEG (with camera EXIF and GPS, some rotated), PNG,
greyscale, CMYK, TIFF, 16-bit PNG and DICOM with PHI, under nested keys with spaces and non-ASCII
names, plus one file of every kind the job must quarantine (`medeid.synth.hospital_files`).
"""

import argparse
import sys
from collections import Counter

from medeid.config import load_config
from medeid.synth.hospital_files import hospital_files, write_files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, help="S3 prefix or folder for the files")
    parser.add_argument("--photos", type=int, help="patient photos (default: the config's anonymize.demo_photos)")
    parser.add_argument("--size", type=int, default=128, help="photo side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", default="demo", help="preset name or YAML file")
    args = parser.parse_args()
    config = load_config(args.config, {"anonymize.demo_photos": args.photos})
    files = hospital_files(config.anonymize.demo_photos, seed=args.seed, size=args.size)
    write_files(files, args.output, config.storage.settings())
    expected = Counter(f.expected for f in files)
    print(f"[make_hospital_files] {len(files)} files under {args.output}: {dict(expected)} expected", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
