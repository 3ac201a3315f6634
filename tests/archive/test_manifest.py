"""The archive manifest on the local S3 server: parts, the latest row per input, reconciliation."""

import datetime as dt
import os

import pytest

from medeid import storage
from medeid.archive.manifest import (
    ANONYMIZED,
    NO_FACE,
    QUARANTINED,
    SKIPPED,
    Entry,
    latest,
    read_manifest,
    reconcile,
    to_table,
    write_part,
)
from medeid.archive.recovery import EMBEDDED, MODES, NONE, SEPARATE
from medeid.pipelines.anonymize import finished_in


@pytest.fixture
def manifest_uri(s3):
    storage.make_bucket("s3://manifest-test", s3.settings)
    return "s3://manifest-test/out-manifest"


def at(minute: int) -> dt.datetime:
    return dt.datetime(2026, 11, 25, 3, minute, tzinfo=dt.timezone.utc)


def test_runs_reconcile_and_the_latest_finished_row_wins(manifest_uri, s3):
    assert len(read_manifest(manifest_uri, s3.settings)) == 0  # no manifest yet: empty, not an error
    listed = ["a.jpg", "b/ü b.png", "c.txt"]
    first = [Entry("r1", "a.jpg", 10, ANONYMIZED, "sha-a", output_key="a.jpg", faces=1, processed_at=at(1)),
             Entry("r1", "b/ü b.png", 20, NO_FACE, "sha-b", processed_at=at(1)),
             Entry("r1", "c.txt", 5, QUARANTINED, "sha-c", reason="not an image", processed_at=at(1))]
    write_part(first[:2], manifest_uri, "r1", "0", s3.settings)
    write_part(first[2:], manifest_uri, "r1", "1", s3.settings)
    run1 = read_manifest(manifest_uri, s3.settings, run_id="r1")
    summary = reconcile(listed, run1)
    assert summary.balanced and summary.counts == {ANONYMIZED: 1, NO_FACE: 1, QUARANTINED: 1, SKIPPED: 0}
    assert str(summary) == "inputs 3 = 1 anonymized + 1 no-face + 1 quarantined + 0 skipped"

    second = [Entry("r2", k, 1, SKIPPED, reason="done in run r1", processed_at=at(2)) for k in listed[:2]]
    second.append(Entry("r2", "c.txt", 5, ANONYMIZED, "sha-c2", output_key="c.txt", faces=1, processed_at=at(2)))
    write_part(second, manifest_uri, "r2", "0", s3.settings)
    everything = read_manifest(manifest_uri, s3.settings)
    assert len(everything) == 6
    current = {row["input_key"]: row for row in latest(everything).to_pylist()}
    assert sorted(current) == sorted(listed)  # one finished row per file, skipped rows never win
    assert current["c.txt"]["run_id"] == "r2" and current["a.jpg"]["run_id"] == "r1"


def test_a_listing_the_rows_do_not_match_is_an_error(manifest_uri, s3):
    write_part([Entry("r1", "a.jpg", 1, ANONYMIZED), Entry("r1", "a.jpg", 1, ANONYMIZED)], manifest_uri, "r1", "0",
               s3.settings)
    with pytest.raises(RuntimeError, match="1 inputs without a row.*1 inputs with several rows"):
        reconcile(["a.jpg", "b.jpg"], read_manifest(manifest_uri, s3.settings, run_id="r1"))
    with pytest.raises(ValueError, match="status"):
        Entry("r1", "a.jpg", 1, "done")


def test_the_archive_secret_comes_from_a_file_or_the_environment_which_then_forgets_it(tmp_path, monkeypatch):
    from medeid.pipelines.anonymize import SECRET_VARIABLE, archive_secret

    (tmp_path / "secret").write_text("from the file\n")
    assert archive_secret(str(tmp_path / "secret")).reveal() == b"from the file"
    monkeypatch.setenv(SECRET_VARIABLE, "from the environment")
    secret = archive_secret(None)
    assert secret.reveal() == b"from the environment" and SECRET_VARIABLE not in os.environ
    assert "environment" not in repr(secret) and "environment" not in f"{secret}"
    with pytest.raises(KeyError, match=SECRET_VARIABLE):
        archive_secret(None)


def test_recovery_finds_the_layout_from_the_manifest_prefix():
    from medeid.pipelines.anonymize import ArchiveLayout

    written = ArchiveLayout.beside("s3://h/photos", "s3://share/photos/")
    found = ArchiveLayout.of_manifest(written.manifest)
    assert (found.output, found.manifest, found.quarantine) == (written.output, written.manifest, written.quarantine)
    assert found.recovery == written.recovery == "s3://share/photos-recovery"  # the store, beside the manifest
    assert ArchiveLayout.of_manifest(written.manifest, recovery_uri="s3://vault/store/").recovery == "s3://vault/store"
    assert ArchiveLayout.of_manifest("s3://x/rows", "s3://share/photos").output == "s3://share/photos"
    with pytest.raises(ValueError, match="-manifest"):
        ArchiveLayout.of_manifest("s3://x/rows")


def test_each_row_records_its_recovery_mode_and_older_rows_count_as_embedded(manifest_uri, s3):
    write_part([Entry("r2", "b.png", 2, ANONYMIZED, recovery=SEPARATE, processed_at=at(2))], manifest_uri, "r2", "0",
               s3.settings)
    older = to_table([Entry("r1", "a.jpg", 1, ANONYMIZED, processed_at=at(1))]).drop_columns(["recovery"])
    storage.write_table(older, f"{manifest_uri}/run=r1/part-0.parquet", s3.settings)  # written before the column
    rows = {r["input_key"]: r for r in latest(read_manifest(manifest_uri, s3.settings)).to_pylist()}
    assert rows["b.png"]["recovery"] == SEPARATE and rows["a.jpg"]["recovery"] is None
    # A re-run in another mode redoes a file; a quarantined one has no output to redo.
    assert finished_in(rows["a.jpg"], EMBEDDED) and not finished_in(rows["a.jpg"], SEPARATE)
    assert finished_in(rows["b.png"], SEPARATE) and not finished_in(rows["b.png"], NONE)
    assert all(finished_in({"status": QUARANTINED, "recovery": None}, mode) for mode in MODES)
