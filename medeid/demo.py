"""The README's demo: the main job on the embedded default, end to end on a local stack.

Starts a local S3 server and a `ray start --head` cluster, submits the job with `ray job submit`
as a user would on a real cluster, copies what it wrote to a local folder (the S3 server keeps
data in memory only), and stops everything, also on failure.
"""

from __future__ import annotations

from pathlib import Path

from medeid import storage
from medeid.devstack import LocalS3, RayHead
from medeid.pipelines.synthetic_archive import CONTACT_SHEET, SAMPLES

DEMO_BUCKET = "s3://medeid-demo"


def run_demo(output_dir: str = "demo-output") -> int:
    archive = f"{DEMO_BUCKET}/archive"
    local = Path(output_dir).resolve()
    with LocalS3() as s3:
        storage.make_bucket(DEMO_BUCKET, s3.settings)
        print(f"[demo] local S3 server at {s3.endpoint_url}; starting a local Ray cluster ...", flush=True)
        with RayHead(env=s3.env) as head:
            print(f"[demo] Ray at {head.address}; submitting jobs/make_synthetic_archive.py", flush=True)
            job = head.submit(["python", "jobs/make_synthetic_archive.py", "--config", "demo", "--output", archive])
            if job.returncode != 0:
                print(f"[demo] the job failed (exit {job.returncode}); its log is above")
                return job.returncode
        copied = storage.copy_tree(archive, str(local / "archive"), s3.settings)
    print(f"[demo] copied {copied} files from {archive} to {local / 'archive'}")
    print(f"[demo] contact sheet: {local / 'archive' / CONTACT_SHEET}")
    print(f"[demo] samples:       {local / 'archive' / SAMPLES}")
    return 0
