"""Speed and memory figures, each against a baseline measured in the same run.

    python jobs/benchmark.py index [--rows 1000000]
    python jobs/benchmark.py mema [--samples 256]
    python jobs/benchmark.py deid [--photos 128]
    python jobs/benchmark.py anonymize [--files 96]
    python jobs/benchmark.py serve [--requests 96]
"""

import argparse
import sys

from medeid.benchmark import SUITES, markdown


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("suite", choices=[*SUITES, "all"])
    parser.add_argument("--rows", type=int, default=1_000_000, help="index suite: embeddings in the index")
    parser.add_argument("--samples", type=int, default=256, help="mema suite: images generated per run")
    parser.add_argument("--photos", type=int, default=128, help="deid suite: photos de-identified per run")
    parser.add_argument("--files", type=int, default=96, help="anonymize suite: photos in the 1x archive")
    parser.add_argument("--requests", type=int, default=96, help="serve suite: requests per measurement")
    args = parser.parse_args()
    for name in SUITES if args.suite == "all" else [args.suite]:
        kwargs = {"index": {"rows": args.rows}, "mema": {"samples": args.samples},
                  "deid": {"photos": args.photos}, "anonymize": {"files": args.files},
                  "serve": {"requests": args.requests}}.get(name, {})
        print(markdown(name, SUITES[name](**kwargs)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
