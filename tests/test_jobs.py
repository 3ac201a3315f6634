"""Jobs as users run them: `ray job submit` against a `ray start --head` cluster."""

import pytest

from medeid import storage
from medeid.devstack import RayHead
from medeid.pipelines.synthetic_archive import CONTACT_SHEET, read_metadata


@pytest.fixture(scope="module")
def head(s3):
    with RayHead(env=s3.env) as cluster:
        yield cluster


def test_make_synthetic_archive_via_ray_job_submit(head, bucket):
    root = f"{bucket}/archive"
    job = head.submit(["python", "jobs/make_synthetic_archive.py", "--output", root, "--patients", "5",
                       "--photos-per-patient", "2", "--size", "64"], capture=True, timeout_s=300)
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    assert "requested 10 = written 10 + quarantined 0 + skipped 0: reconciled" in job.stdout
    assert read_metadata(root).num_rows == 10
    assert storage.exists(storage.join(root, CONTACT_SHEET))


def test_a_failing_job_reports_failure(head, bucket):
    job = head.submit(["python", "jobs/make_synthetic_archive.py", "--output", f"{bucket}/x", "--size", "20"],
                      capture=True, timeout_s=300)
    assert job.returncode != 0
    assert "between 64 and 256" in job.stdout + job.stderr
