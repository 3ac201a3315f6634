"""Speed and memory figures, each against a baseline measured in the same run.

    python jobs/benchmark.py index [--rows 1000000]
    python jobs/benchmark.py mema [--samples 256]
    python jobs/benchmark.py deid [--photos 128]
    python jobs/benchmark.py anonymize [--files 96]
    python jobs/benchmark.py serve [--requests 96]
    python jobs/benchmark.py multinode [--node-samples 96]  # build_mema's generator on 1 vs 2 worker nodes
    python jobs/benchmark.py realfaces [--lfw-faces 100] [--deid-model DIR]
        # face detection on real photos, per face size; then the archive job on them under a real recogniser
    python jobs/benchmark.py all [--output benchmark.md]     # every suite, one table with the machine

Each suite prints its table as it finishes; `all` then prints (and with --output writes) every
figure in one Markdown table headed by the machine's description, for the README.
"""

import argparse
import sys
import time
from pathlib import Path

from medeid.benchmark import SUITES, markdown, report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("suite", choices=[*SUITES, "all"])
    parser.add_argument("--rows", type=int, default=1_000_000, help="index suite: embeddings in the index")
    parser.add_argument("--samples", type=int, default=256, help="mema suite: images generated per run")
    parser.add_argument("--node-samples", type=int, default=96, help="multinode suite: images generated per run")
    parser.add_argument("--photos", type=int, default=128, help="deid suite: photos de-identified per run")
    parser.add_argument("--files", type=int, default=96, help="anonymize suite: photos in the 1x archive")
    parser.add_argument("--requests", type=int, default=96, help="serve suite: requests per measurement")
    parser.add_argument("--lfw-faces", type=int, default=100, help="realfaces suite: LFW faces in the check set")
    parser.add_argument("--deid-model", help="realfaces suite: MedSem-DeID for the archive job on real photos "
                                             "(default: demo-output/models/deid, else an untrained one)")
    parser.add_argument("--output", help="also write the combined Markdown table to this file")
    args = parser.parse_args()
    started, results = time.monotonic(), {}
    for name in SUITES if args.suite == "all" else [args.suite]:
        kwargs = {"index": {"rows": args.rows}, "mema": {"samples": args.samples},
                  "deid": {"photos": args.photos}, "anonymize": {"files": args.files},
                  "serve": {"requests": args.requests}, "multinode": {"samples": args.node_samples},
                  "realfaces": {"lfw_count": args.lfw_faces, "deid_model": args.deid_model}}.get(name, {})
        results[name] = SUITES[name](**kwargs)
        print(markdown(name, results[name]), flush=True)
    table = report(results, (time.monotonic() - started) / 60)
    if args.suite == "all":
        print("\n" + table, flush=True)
    if args.output:
        Path(args.output).write_text(table)
        print(f"[benchmark] written to {args.output}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
