"""Jobs fail fast, never hang, when the Ray cluster they would join is gone."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from medeid.devstack import free_port
from medeid.raycluster import DeadClusterError, check_cluster, forget_dead_record, recorded_cluster

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def ray_temp(monkeypatch):
    """A Ray temp folder of the test's own, where `ray.init()` looks for the recorded cluster (short:
    a Ray started there keeps its sockets there, and their paths must stay under 107 characters)."""
    folder = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    monkeypatch.setenv("RAY_TMPDIR", str(folder))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    (folder / "ray").mkdir()
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def record(ray_temp: Path, address: str) -> None:
    (ray_temp / "ray" / "ray_current_cluster").write_text(address)


def test_a_job_exits_with_one_line_when_its_recorded_cluster_is_gone(ray_temp, tmp_path):
    dead = f"127.0.0.1:{free_port()}"  # nobody listens there
    record(ray_temp, dead)
    # Without the check, ray.init() retries this address forever: the timeout is the failure.
    job = subprocess.run([sys.executable, "jobs/make_synthetic_archive.py", "--output", str(tmp_path / "out"),
                          "--patients", "2", "--photos-per-patient", "1", "--size", "64"],
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                         timeout=120)
    assert job.returncode == 2
    line = job.stderr.strip().splitlines()[-1]
    assert dead in line and "ray stop" in line and "RAY_ADDRESS=local" in line
    assert not (tmp_path / "out").exists()


def test_ray_address_local_is_the_way_out(ray_temp, tmp_path):
    record(ray_temp, f"127.0.0.1:{free_port()}")
    job = subprocess.run([sys.executable, "jobs/make_synthetic_archive.py", "--output", str(tmp_path / "out"),
                          "--patients", "2", "--photos-per-patient", "1", "--size", "64"],
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "RAY_ADDRESS": "local"},
                         capture_output=True, text=True, timeout=240)
    assert job.returncode == 0, job.stdout[-2000:] + job.stderr[-2000:]
    assert "requested 2 = written 2 + quarantined 0 + skipped 0: reconciled" in job.stdout


def test_a_dead_ray_address_is_named_too(monkeypatch):
    dead = f"127.0.0.1:{free_port()}"
    monkeypatch.setenv("RAY_ADDRESS", dead)
    with pytest.raises(DeadClusterError, match=dead):
        check_cluster()


def test_a_live_cluster_passes_and_its_record_is_kept(ray_temp, ray_session):
    live = ray_session.get_runtime_context().gcs_address
    record(ray_temp, live)
    assert check_cluster() == live
    assert forget_dead_record() is None and recorded_cluster() == live


def test_a_dead_record_is_forgotten(ray_temp):
    dead = f"127.0.0.1:{free_port()}"
    record(ray_temp, dead)
    assert forget_dead_record() == dead
    assert recorded_cluster() is None and check_cluster() is None  # ray.init() would start a fresh instance


def test_a_job_driver_gets_the_machines_cpus_back():
    """`ray job submit` runs entrypoints under OMP_NUM_THREADS=1; `init_ray` (every job's) lifts torch back
    to every CPU the process may use, so a driver's own work does not run on one core."""
    code = ("import os, torch; from medeid.raycluster import driver_threads; before = torch.get_num_threads(); "
            "print(before, driver_threads(), len(os.sched_getaffinity(0)))")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=True)
    before, after, cpus = map(int, out.stdout.split())
    assert before == 1 and after == cpus
