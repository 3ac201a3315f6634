"""The README's demo: the main job on the embedded default, end to end on a local stack.

Starts a local S3 server and a `ray start --head` cluster and submits, with `ray job submit` as a
user would on a real cluster, every job MeMa needs: the synthetic archive, the recognisers, the
medical model, the generator fine-tune, the strategy comparison and build_mema itself, then MedSem-DeID
(and its ablation without Enc_med) and their evaluation against the baselines, then the face
detector and the archive job over a hospital archive of files (every format and every kind of
trouble), under an archive secret made for the run and kept in a private temporary file, in the
job's default recovery mode (`separate`: the seals in `<shared>-recovery/`, not in the files), then
the serving endpoint, deployed on the cluster and called over HTTP, which also restores the archive's
copies by key with the recovery data from that store; then the same archive job on real photographs
(`medeid/realfaces.py`) with the real detector, each face checked by a real recogniser. Then it
copies what a person looks at to a local folder (the S3 server keeps data in memory only) and
stops everything, also on failure.

    python -m medeid.demo [--output-dir demo-output]     # what `make demo` runs
"""

from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
import time
from pathlib import Path

from medeid import storage
from medeid.devstack import LocalS3, RayHead, free_port

DEMO_BUCKET = "s3://medeid-demo"
ARCHIVE, MODELS, MEMA = f"{DEMO_BUCKET}/archive", f"{DEMO_BUCKET}/models", f"{DEMO_BUCKET}/mema"
DEID, DEID_ABLATION, EVALUATION = f"{MODELS}/deid", f"{MODELS}/deid-without-enc-med", f"{DEMO_BUCKET}/evaluation"
DETECTOR, HOSPITAL = f"{MODELS}/detector", f"{DEMO_BUCKET}/hospital-files"
SHARED = f"{HOSPITAL}-anonymized"  # the copy a hospital would share; its manifest, quarantine, report beside it
SECRET_FILE = "<secret file>"  # replaced by the run's private secret file
TOKEN_FILE, SERVE_PORT = "<token file>", "<serve port>"  # the run's recovery token file; a free port
SERVE_CHECK = f"{DEMO_BUCKET}/serve-check"
REAL = f"{DEMO_BUCKET}/real-photos"  # medeid/realfaces.py's check set: real portraits, composed as clinics take them
REAL_SHARED, REAL_CHECK = f"{REAL}-anonymized", f"{REAL}-check"

# A step that runs this long has hung: a guard, not a budget (the evaluation takes ~10 min on a quiet
# 2-core machine; on a slower one, or sharing its cores, 900 s was not enough).
STEP_TIMEOUT_S = 3600
ABLATION_EPOCHS = 3  # of MedSem-DeID's 6 (`DeidConfig.epochs`)
ABLATION_PAIRS = 1  # a photo (of MedSem-DeID's 2): a quarter of its steps, half its pairs to draw
DETECTOR_EPOCHS = 10  # of the preset's 20: held-out recall 0.99 at 10 epochs; the demo's archive needs no more

STEPS = [  # (what, entrypoint)
    ("synthetic hospital archive", ["jobs/make_synthetic_archive.py", "--output", ARCHIVE]),
    ("recognisers (pipeline + held-out evaluator)", ["jobs/train_identity.py", "--archive", ARCHIVE,
                                                     "--output", MODELS]),
    ("medical model", ["jobs/train_medical.py", "--archive", ARCHIVE, "--output", f"{MODELS}/medical"]),
    ("generator fine-tune", ["jobs/train_generator.py", "--archive", ARCHIVE, "--output", f"{MODELS}/generator"]),
    ("generation strategies compared", ["jobs/build_mema.py", "--archive", ARCHIVE, "--models", MODELS,
                                        "--output", MEMA, "--compare-strategies"]),
    ("MeMa", ["jobs/build_mema.py", "--archive", ARCHIVE, "--models", MODELS, "--output", MEMA]),
    ("MedSem-DeID", ["jobs/train_deid.py", "--archive", ARCHIVE, "--models", MODELS, "--output", DEID]),
    # A quarter of the steps (493 -> 264 s in the demo of 2026-12-04): without Enc_med it has no reading to draw
    # the findings from, which no training length changes (disease ratio 0.38 at 6 epochs, 0.41 at 3 on 2026-12-02).
    ("MedSem-DeID without Enc_med (ablation)", ["jobs/train_deid.py", "--archive", ARCHIVE, "--models", MODELS,
                                                "--output", DEID_ABLATION, "--name", "deid-without-enc-med",
                                                "--without-enc-med", "--epochs", str(ABLATION_EPOCHS),
                                                "--pairs-per-photo", str(ABLATION_PAIRS)]),
    ("de-identification evaluated against the baselines", ["jobs/evaluate.py", "--archive", ARCHIVE,
                                                           "--models", MODELS, "--deid", DEID,
                                                           "--deid-without-enc-med", DEID_ABLATION,
                                                           "--output", EVALUATION]),
    ("face detector", ["jobs/train_detector.py", "--output", DETECTOR, "--epochs", str(DETECTOR_EPOCHS)]),
    ("hospital archive of files", ["jobs/make_hospital_files.py", "--output", HOSPITAL]),
    ("archive anonymized", ["jobs/anonymize_archive.py", "--input", HOSPITAL, "--output", SHARED, "--model", DEID,
                            "--detector", DETECTOR, "--secret-file", SECRET_FILE]),
    # The endpoint holds the archive's secret: it also restores the archive job's copies by record id (key),
    # each sent with its recovery data from the job's store (the default `separate` mode; the check exits
    # non-zero unless every copy comes back).
    ("serving endpoint, called over HTTP", ["jobs/serve_check.py", "--model", DEID, "--detector", DETECTOR,
                                            "--photos", HOSPITAL, "--shared", SHARED, "--output", SERVE_CHECK,
                                            "--secret-file", SECRET_FILE, "--token-file", TOKEN_FILE,
                                            "--port", SERVE_PORT]),
    # Real photographs: the same job with the real detector (CenterFace), each real face then checked
    # against its copy by a recogniser the project never trains against (dlib's ResNet).
    ("real photographs", ["jobs/make_real_photos.py", "--output", REAL]),
    ("real photographs anonymized (CenterFace)", ["jobs/anonymize_archive.py", "--input", REAL, "--output",
                                                 REAL_SHARED, "--model", DEID, "--detector", "centerface",
                                                 "--secret-file", SECRET_FILE]),
    ("real photographs checked by a real recogniser", ["jobs/check_real_photos.py", "--photos", REAL,
                                                       "--shared", REAL_SHARED, "--output", REAL_CHECK]),
]
# What people look at, copied out of the S3 server. Real-patient embeddings (mema/private) stay in.
LOOK_AT = [("archive/contact_sheet.png", "archive"), ("archive/samples.png", "archive"),
           ("models/generator/samples.png", "generator"), ("mema/strategies.png", "mema"), ("mema/card", "mema/card"),
           ("mema/run.json", "mema"), ("models/deid/samples.png", "deid"), ("evaluation", "evaluation"),
           ("hospital-files-anonymized-report", "archive-job/report"),
           ("hospital-files-anonymized-manifest", "archive-job/manifest"), ("serve-check", "serve"),
           ("real-photos-check", "real-photos"), ("real-photos-anonymized-report", "real-photos/archive-job"),
           # The trained models, so a user can anonymize their own folder right after (README).
           *((f"models/{name}", f"models/{name}")
             for name in ("deid", "detector", "recognizer", "evaluator", "medical"))]


def run_demo(output_dir: str = "demo-output", config: str = "demo", until: str | None = None) -> int:
    """Run the demo's steps in order; with `until`, stop after the first step whose name holds it."""
    local = Path(output_dir).resolve()
    started = time.monotonic()
    steps = STEPS
    if until is not None:
        last = next((i for i, (what, _) in enumerate(STEPS) if until.lower() in what.lower()), None)
        if last is None:
            raise ValueError(f"no demo step is named like {until!r}; the steps: {[what for what, _ in STEPS]}")
        steps = STEPS[:last + 1]
    with LocalS3() as s3, tempfile.TemporaryDirectory() as private:
        secret_file = Path(private) / "archive.secret"  # made for this run, readable by this user only
        secret_file.touch(mode=0o600)
        secret_file.write_text(secrets.token_urlsafe(32))
        token_file = Path(private) / "recovery.token"
        token_file.touch(mode=0o600)
        token_file.write_text(secrets.token_urlsafe(32))
        placeholders = {SECRET_FILE: str(secret_file), TOKEN_FILE: str(token_file), SERVE_PORT: str(free_port())}
        storage.make_bucket(DEMO_BUCKET, s3.settings)
        print(f"[demo] local S3 server at {s3.endpoint_url}; starting a local Ray cluster ...", flush=True)
        with RayHead(env=s3.env) as head:
            print(f"[demo] Ray at {head.address}", flush=True)
            for i, (what, entrypoint) in enumerate(steps, 1):
                step_started = time.monotonic()
                print(f"\n[demo] step {i}/{len(steps)}: {what}: ray job submit -- python {' '.join(entrypoint)}",
                      flush=True)
                entrypoint = [placeholders.get(arg, arg) for arg in entrypoint]
                job = head.submit(["python", *entrypoint, "--config", config], timeout_s=STEP_TIMEOUT_S)
                if job.returncode != 0:
                    print(f"[demo] step {i} failed (exit {job.returncode}); its log is above")
                    return job.returncode
                print(f"[demo] step {i} done in {time.monotonic() - step_started:.0f} s", flush=True)
        for source, destination in LOOK_AT:
            uri = storage.join(DEMO_BUCKET, source)
            target = local / destination
            if steps is not STEPS and not storage.exists(uri, s3.settings) \
                    and not storage.list_files(uri, s3.settings):
                continue  # a step not run with --until
            if source.endswith((".png", ".json")):
                target.mkdir(parents=True, exist_ok=True)
                (target / source.rsplit("/", 1)[1]).write_bytes(storage.read_bytes(uri, s3.settings))
            else:
                storage.copy_tree(uri, str(target), s3.settings)
    print(f"\n[demo] done in {(time.monotonic() - started) / 60:.1f} min. Look at:")
    print(f"[demo]   {local / 'evaluation' / 'report.md'}       "
          "MedSem-DeID vs the baselines: bars, grids, privacy-utility plot")
    print(f"[demo]   {local / 'archive-job' / 'report'}        "
          "the archive job's report: reconciliation, quarantine, before/after")
    print(f"[demo]   {local / 'serve' / 'serve-check.png'}     "
          "the serving endpoint over HTTP: sent / de-identified / recovered")
    print(f"[demo]   {local / 'real-photos' / 'report.md'}     "
          "real photographs through the archive job, checked by a real recogniser")
    print(f"[demo]   {local / 'deid' / 'samples.png'}             "
          "original / de-identified / recovered / wrong password")
    print(f"[demo]   {local / 'mema' / 'card' / 'README.md'}   the MeMa dataset card: bars, privacy audit, pictures")
    print(f"[demo]   {local / 'mema' / 'strategies.png'}        txt2img vs img2img vs inpainting, same conditions")
    print(f"[demo]   {local / 'generator' / 'samples.png'}      what the fine-tuned generator draws")
    print(f"[demo]   {local / 'archive' / 'contact_sheet.png'}  the synthetic patients it learnt from")
    print(f"[demo]   {local / 'models'}                     the trained models (deid, detector, recognisers, medical)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medeid.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default="demo-output", help="where the results are copied to")
    parser.add_argument("--until", default=None, help="stop after the first step whose name holds this "
                                                       "(e.g. 'MeMa'): a part of the demo, for development")
    args = parser.parse_args(argv)
    return run_demo(args.output_dir, until=args.until)


if __name__ == "__main__":
    sys.exit(main())
