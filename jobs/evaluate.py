"""Evaluate MedSem-DeID against the baselines on the archive's held-out patients (DESIGN §3).

    ray job submit -- python jobs/evaluate.py --archive s3://bucket/archive --models s3://bucket/models \
        --deid s3://bucket/models/deid --deid-without-enc-med s3://bucket/models/deid-no-med \
        --output s3://bucket/reports/deid

Judged by the held-out evaluator recogniser (<models>/evaluator), the medical model (<models>/medical)
and the attack suite: a periocular recogniser, an adaptive attacker per method and a pixel attacker, each
trained on the training patients here (`medeid.evaluate.attacks`). The ideal swap (the photo's condition
drawn on someone else) is the reference. The output folder gets report.md (tables and PASS/FAIL bars),
grid.png, privacy_utility.png and figures.json.
"""

import argparse
import sys

import ray

from medeid.config import load_config
from medeid.evaluate.deid import ABLATION, MAIN, evaluate_deid
from medeid.evaluate.report import render_report, summary
from medeid.raycluster import init_ray
from medeid.storage import join


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archive", required=True, help="archive root with metadata/, photos/ and masks/")
    parser.add_argument("--models", required=True, help="folder or S3 prefix holding medical/ and evaluator/")
    parser.add_argument("--deid", required=True, help="the MedSem-DeID model to evaluate")
    parser.add_argument("--deid-without-enc-med", help="the ablation trained without Enc_med (optional)")
    parser.add_argument("--evaluator", help="held-out recogniser pack (default <models>/evaluator)")
    parser.add_argument("--output", required=True, help="folder or S3 prefix for the report")
    parser.add_argument("--config", default="demo", help="preset name or YAML file")
    parser.add_argument("--max-photos", type=int, help="evaluate only the first N held-out photos")
    parser.add_argument("--max-train-photos", type=int, help="train the attackers on the first N training photos")
    parser.add_argument("--no-attacks", action="store_true", help="skip the attack suite (full-face evaluator only)")
    args = parser.parse_args()
    config = load_config(args.config)
    settings = config.storage.settings()

    init_ray()
    # Same photos in the same order on every run, so --max-photos picks the same subset.
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    deid_uris = {MAIN: args.deid, **({ABLATION: args.deid_without_enc_med} if args.deid_without_enc_med else {})}
    figures, grid = evaluate_deid(args.archive, deid_uris, args.evaluator or join(args.models, "evaluator"),
                                  join(args.models, "medical"), settings=settings, held_out=config.deid.held_out,
                                  max_photos=args.max_photos, max_train_photos=args.max_train_photos,
                                  attacks=not args.no_attacks)
    report = render_report(figures, grid, args.output, settings)
    print(summary(figures), flush=True)
    print(f"[evaluate] report: {report}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
