"""The archive job on the local S3 server and Ray, over a prepared archive of a few hundred files
(`medeid.synth.hospital_files`: photos in every form, and every kind of trouble once).

One clean run, in the default recovery mode (`separate`), is the reference: every file ends in
exactly one manifest row with its expected status, nothing identifying is left (no seal either: the
seals are in the private store), the quarantine is untouched, the secret is nowhere, a report with
its grid is written. Then: recovery from the store meets the DESIGN §3 bars on the face region; a
re-run skips everything; an actor killed mid-job and a job killed mid-way then re-run both end with
the clean run's output and store, byte for byte. A small archive of every form goes through
`embedded` and then `none`: the second run redoes every file, leaves no seal and refuses recovery.
"""

import contextlib
import hashlib
import io
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow.compute as pc
import pytest
from PIL import Image
from skimage.metrics import structural_similarity

from medeid import storage
from medeid.archive.anonymize import Decoded
from medeid.archive.formats import sniff
from medeid.archive.manifest import ANONYMIZED, QUARANTINED, SKIPPED, latest, read_manifest
from medeid.archive.recovery import EMBEDDED, NONE, SEPARATE, RecoveryStore
from medeid.archive.report import GRID_FILE, REPORT_FILE
from medeid.passwords import Secret
from medeid.pipelines.anonymize import WRITTEN_WITH_NONE, ArchiveLayout, anonymize_archive, recover_photos
from medeid.synth.hospital_files import CAMERA_MAKE, FORMS, PHI, PRIVATE_NOTE, hospital_files, write_files
from tests.archive.seal_checks import seal_traces
from tests.models.test_deid_api import psnr

ROOT = Path(__file__).resolve().parents[2]
SECRET_TEXT = "correct horse battery staple of the eye clinic"
# + 8 trouble files: eight turns through every stored form (FORMS), and enough batches of 8 for a job to be
# killed with work done and work left (240 photos, the demo's archive, tested the same at three times the cost)
PHOTOS = 80
ROW_FIELDS = ["status", "reason", "input_sha256", "output_key", "output_sha256", "faces", "recovery"]


@pytest.fixture(scope="module")
def models(small_models):
    return small_models


@pytest.fixture(scope="module")
def clean(ray_session, s3, models):
    """The archive on S3 and one uninterrupted run over it (the reference), with what it printed."""
    bucket = "s3://archive-job"
    storage.make_bucket(bucket, s3.settings)
    files = {f.key: f for f in hospital_files(PHOTOS, seed=11)}
    write_files(list(files.values()), f"{bucket}/in", s3.settings)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
        run = anonymize_archive(f"{bucket}/in", f"{bucket}/clean", *models, Secret(SECRET_TEXT), run_id="clean",
                                settings=s3.settings, actors=1)
    return {"bucket": bucket, "files": files, "summary": run.summary, "run": run, "printed": printed.getvalue(),
            "layout": ArchiveLayout.beside(f"{bucket}/in", f"{bucket}/clean")}


def tree(uri: str, settings) -> dict[str, bytes]:
    return {storage.relative_key(uri, f): storage.read_bytes(f, settings) for f in storage.list_files(uri, settings)}


def digests(uri: str, settings) -> dict[str, str]:
    """`tree` as SHA-256s: comparing raw bytes, a failure makes pytest diff megabytes (minutes)."""
    return {key: hashlib.sha256(data).hexdigest() for key, data in tree(uri, settings).items()}


def finished_rows(manifest: str, settings) -> dict[str, tuple]:
    rows = latest(read_manifest(manifest, settings)).to_pylist()
    return {r["input_key"]: tuple(r[f] for f in ROW_FIELDS) for r in rows}


def assert_same_as_clean(layout: ArchiveLayout, clean: dict, settings) -> None:
    reference = clean["layout"]
    assert digests(layout.output, settings) == digests(reference.output, settings)
    assert digests(layout.quarantine, settings) == digests(reference.quarantine, settings)
    assert digests(layout.recovery, settings) == digests(reference.recovery, settings)  # the store, byte for byte
    assert finished_rows(layout.manifest, settings) == finished_rows(reference.manifest, settings)


def test_every_file_ends_in_exactly_one_row_with_nothing_identifying_left(clean, s3):
    files, layout, summary = clean["files"], clean["layout"], clean["summary"]
    assert len(files) == PHOTOS + 8 and summary.balanced and summary.inputs == len(files)
    assert clean["run"].processed == len(files) and 100 < clean["run"].actor_peak_mib < 8192
    rows = read_manifest(layout.manifest, s3.settings, run_id="clean").to_pylist()
    assert sorted(r["input_key"] for r in rows) == sorted(files)  # exactly one row each
    store = RecoveryStore(layout.recovery, s3.settings)
    for row in rows:
        file = files[row["input_key"]]
        assert row["status"] == file.expected, (file.key, row["reason"])
        if file.expected == QUARANTINED:
            assert row["reason"] and row["faces"] == 0 and row["recovery"] is None
            assert storage.read_bytes(f"{layout.quarantine}/{file.key}", s3.settings) == file.data  # untouched
            assert not storage.exists(f"{layout.output}/{file.key}", s3.settings)
            continue
        out = storage.read_bytes(f"{layout.output}/{file.key}", s3.settings)
        assert row["faces"] >= 1 and row["output_sha256"] and out != file.data
        seals = store.get(file.key, row["output_sha256"])  # the default mode: the seals stay on this side
        assert row["recovery"] == SEPARATE and len(seals) == row["faces"]
        assert seal_traces(out, seals) == [], file.key
        assert sniff(out) == sniff(file.data)  # the same format
        for value in [CAMERA_MAKE, PRIVATE_NOTE, *PHI.values()]:  # (GPS: by its EXIF tag below)
            assert value.encode() not in out, (file.key, value)
        before, after = Decoded.of(file.data).rgb, Decoded.of(out).rgb
        assert after.shape == before.shape  # upright, as the EXIF orientation said
        if not file.key.endswith(".dcm"):
            with Image.open(io.BytesIO(out)) as image:  # (a TIFF's own tags are its structure, not EXIF)
                assert not {0x8825, 0x010F, 0x0112} & set(image.getexif())  # GPS, make, orientation
    assert summary.counts[QUARANTINED] == 8 and summary.counts[ANONYMIZED] == PHOTOS
    reasons = {r["input_key"]: r["reason"] for r in rows if r["status"] == QUARANTINED}
    assert "empty" in reasons["incoming/empty upload.jpg"] and "pixels" in reasons["incoming/bomb.png"]
    assert "corrupt" in reasons["incoming/corrupt.jpg"] and "fails closed" in reasons["incoming/colour chart.png"]


def test_the_secret_is_nowhere_and_the_report_shows_the_run(clean, s3, ray_session):
    layout = clean["layout"]
    secret = SECRET_TEXT.encode()
    for prefix in (layout.manifest, layout.output, layout.report, layout.recovery):
        assert not any(secret in data for data in tree(prefix, s3.settings).values()), prefix
    assert SECRET_TEXT not in clean["printed"] and f"inputs {PHOTOS + 8} = {PHOTOS} anonymized" in clean["printed"]
    context = ray_session.get_runtime_context()
    logs = Path(context.get_temp_dir()) / context.get_session_name() / "logs"  # every Ray process's log
    assert logs.is_dir() and not [p for p in logs.rglob("*") if p.is_file() and secret in p.read_bytes()]

    report = storage.read_bytes(f"{layout.report}/run=clean/{REPORT_FILE}", s3.settings).decode()
    assert f"inputs {PHOTOS + 8} = {PHOTOS} anonymized + 0 no-face + 8 quarantined + 0 skipped" in report
    assert "balanced" in report
    assert "| too many pixels | 1 | `incoming/bomb.png` |" in report
    assert f"recovery data, {PHOTOS} files: **separate**" in report and layout.recovery in report
    with Image.open(io.BytesIO(storage.read_bytes(f"{layout.report}/run=clean/{GRID_FILE}", s3.settings))) as grid:
        assert grid.height > 8 * 128 and grid.width > 2 * 128  # 8 before/after pairs


def face_region(before: np.ndarray, after: np.ndarray) -> tuple[slice, slice]:
    """The box around every pixel the anonymization changed: the replaced face."""
    rows, cols = np.nonzero(np.abs(before.astype(int) - after).max(axis=2) > 8)
    return slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1)


def test_recovery_restores_the_face_region_within_the_bars_and_only_with_the_secret(clean, s3, models):
    files, layout, bucket = clean["files"], clean["layout"], clean["bucket"]
    photos = [key for key, f in files.items() if f.expected == ANONYMIZED]
    chosen = photos[:len(FORMS)]  # one of each form, in turn
    statuses = recover_photos(layout, [*chosen, "incoming/notes.jpg"], f"{bucket}/restored", models[0],
                              Secret(SECRET_TEXT), s3.settings)
    assert "not restored" in statuses.pop("incoming/notes.jpg")
    assert set(statuses.values()) == {"recovered"}, statuses
    for key in chosen:
        original = Decoded.of(files[key].data).rgb
        anonymous = Decoded.of(storage.read_bytes(f"{layout.output}/{key}", s3.settings)).rgb
        restored = Decoded.of(storage.read_bytes(f"{bucket}/restored/{key}", s3.settings)).rgb
        box = face_region(original, anonymous)
        assert box[0].stop - box[0].start >= 32, key  # a face was replaced
        a, b = original[box], restored[box]
        assert psnr(a, b) >= 30 and structural_similarity(a, b, channel_axis=-1, data_range=255) >= 0.95, key
        assert psnr(a, anonymous[box]) < 30, key
    wrong = recover_photos(layout, chosen[:1], f"{bucket}/wrong", models[0], Secret("a guess"), s3.settings)
    assert wrong[chosen[0]] == "wrong password" and not storage.exists(f"{bucket}/wrong/{chosen[0]}", s3.settings)
    # Without the store, the shared copy alone restores nothing.
    elsewhere = ArchiveLayout.of_manifest(layout.manifest, recovery_uri=f"{bucket}/no-store")
    lost = recover_photos(elsewhere, chosen[:1], f"{bucket}/lost", models[0], Secret(SECRET_TEXT), s3.settings)
    assert "recovery store" in lost[chosen[0]] and not storage.exists(f"{bucket}/lost/{chosen[0]}", s3.settings)


def test_a_rerun_skips_everything_and_writes_nothing(clean, s3, models):
    layout = clean["layout"]
    before = digests(layout.output, s3.settings)
    again = anonymize_archive(layout.input, layout.output, *models, Secret(SECRET_TEXT), run_id="again",
                              settings=s3.settings, actors=1).summary
    assert again.balanced and again.counts[SKIPPED] == len(clean["files"])
    assert digests(layout.output, s3.settings) == before
    everything = read_manifest(layout.manifest, s3.settings)
    assert len(latest(everything)) == len(clean["files"])  # still one finished row per file
    assert pc.sum(pc.equal(everything["run_id"], "again")).as_py() == len(clean["files"])


def manifest_parts(layout: ArchiveLayout, run_id: str, settings) -> int:
    root = f"{layout.manifest}/run={run_id}"
    return len(storage.list_files(root, settings)) if storage.exists(root, settings) else 0


def wait_for(condition, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def archive_actors() -> list[psutil.Process]:
    """The processes of the job's anonymizing actors (Ray titles them after the actor's class)."""
    return [p for p in psutil.process_iter(["cmdline"]) if "AnonymizeFiles" in " ".join(p.info["cmdline"] or [])]


def test_an_actor_killed_mid_job_costs_a_retry_not_a_file(clean, s3, models):
    layout = ArchiveLayout.beside(clean["layout"].input, f"{clean['bucket']}/killed-actor")
    result = {}

    def run():
        result["summary"] = anonymize_archive(layout.input, layout.output, *models, Secret(SECRET_TEXT),
                                              run_id="killed", settings=s3.settings, actors=1, batch_size=8,
                                              report_samples=0).summary

    job = threading.Thread(target=run)
    job.start()
    wait_for(lambda: manifest_parts(layout, "killed", s3.settings) >= 2)
    actors = archive_actors()
    assert actors, "the archive actor's process was not found"
    parts_at_kill = manifest_parts(layout, "killed", s3.settings)
    for process in actors:
        process.send_signal(signal.SIGKILL)  # a crash, not a polite stop
    job.join(timeout=600)
    assert not job.is_alive() and result["summary"].balanced
    batches = -(-len(clean["files"]) // 8)
    assert parts_at_kill < batches  # it died mid-job
    assert manifest_parts(layout, "killed", s3.settings) == batches  # a retried batch rewrote its own part
    assert_same_as_clean(layout, clean, s3.settings)


def test_a_job_killed_midway_and_rerun_ends_as_a_clean_run(clean, s3, models, tmp_path, ray_session):
    layout = ArchiveLayout.beside(clean["layout"].input, f"{clean['bucket']}/killed-job")
    secret_file = tmp_path / "archive.secret"
    secret_file.write_text(SECRET_TEXT + "\n")
    command = [sys.executable, "jobs/anonymize_archive.py", "--input", layout.input, "--output", layout.output,
               "--model", models[0], "--detector", models[1], "--secret-file", str(secret_file), "--actors", "1",
               "--batch-size", "8", "--run-id", "interrupted"]
    env = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address, "PYTHONPATH": str(ROOT)}
    job = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: manifest_parts(layout, "interrupted", s3.settings) >= 3 or job.poll() is not None)
    finally:
        job.send_signal(signal.SIGKILL)
        output = job.communicate()[0].decode(errors="replace")
    assert job.returncode == -signal.SIGKILL, output  # killed, not finished
    assert SECRET_TEXT not in output
    # The killed driver's actor dies with its job; until then it could still be writing.
    wait_for(lambda: not archive_actors())
    done = len(latest(read_manifest(layout.manifest, s3.settings)))
    assert 0 < done < len(clean["files"])

    resumed = anonymize_archive(layout.input, layout.output, *models, Secret(SECRET_TEXT), run_id="resumed",
                                settings=s3.settings, actors=1, report_samples=0).summary
    assert resumed.balanced and resumed.counts[SKIPPED] == done  # what the killed run finished is not redone
    assert_same_as_clean(layout, clean, s3.settings)
    assert len(latest(read_manifest(layout.manifest, s3.settings))) == len(clean["files"])


def test_embedded_then_none_redoes_every_file_and_leaves_nothing_to_recover(clean, s3, models):
    bucket, files = clean["bucket"], clean["files"]
    photos = [k for k, f in files.items() if f.expected == ANONYMIZED][:len(FORMS)]  # one of each form, in turn
    trouble = [k for k, f in files.items() if f.expected == QUARANTINED][:2]
    small = {k: files[k] for k in photos + trouble}
    write_files(list(small.values()), f"{bucket}/small", s3.settings)
    layout = ArchiveLayout.beside(f"{bucket}/small", f"{bucket}/small-out")
    anonymized = sorted(k for k, f in small.items() if f.expected == ANONYMIZED)
    assert {sniff(small[k].data) for k in anonymized} == {"jpeg", "png", "tiff", "dicom"}

    embedded = anonymize_archive(layout.input, layout.output, *models, Secret(SECRET_TEXT), run_id="embedded",
                                 settings=s3.settings, actors=1, report_samples=0, recovery=EMBEDDED).summary
    assert embedded.balanced and not storage.exists(layout.recovery, s3.settings)
    for key in anonymized:  # today's behaviour: the seals ride in the file
        assert seal_traces(storage.read_bytes(f"{layout.output}/{key}", s3.settings)), key
    restored = recover_photos(layout, anonymized, f"{bucket}/small-restored", models[0], Secret(SECRET_TEXT),
                              s3.settings)
    assert set(restored.values()) == {"recovered"}, restored

    none = anonymize_archive(layout.input, layout.output, *models, Secret(SECRET_TEXT), run_id="none",
                             settings=s3.settings, actors=1, report_samples=0, recovery=NONE).summary
    assert none.balanced and none.counts[SKIPPED] == len(trouble)  # quarantined: no output, nothing to redo
    assert none.counts[ANONYMIZED] == len(anonymized)  # written in another mode: done again, not skipped
    rows = {r["input_key"]: r for r in latest(read_manifest(layout.manifest, s3.settings)).to_pylist()}
    for key in anonymized:
        out = storage.read_bytes(f"{layout.output}/{key}", s3.settings)
        assert rows[key]["recovery"] == NONE and seal_traces(out) == [], key
    assert not storage.exists(layout.recovery, s3.settings)  # nothing kept anywhere
    refused = recover_photos(layout, anonymized, f"{bucket}/small-refused", models[0], Secret(SECRET_TEXT),
                             s3.settings)
    assert set(refused.values()) == {WRITTEN_WITH_NONE} and "irreversible" in WRITTEN_WITH_NONE
    assert not storage.exists(f"{bucket}/small-refused", s3.settings)
