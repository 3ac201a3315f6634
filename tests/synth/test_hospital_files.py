"""The synthetic archive of files: every form and every kind of trouble, the same bytes every time."""

import subprocess
import sys
from pathlib import Path

from medeid.archive.formats import sniff
from medeid.synth.hospital_files import ANONYMIZED, FORMS, QUARANTINED, hospital_files

ROOT = Path(__file__).resolve().parents[2]


def test_every_form_and_trouble_is_there_under_awkward_keys_and_the_bytes_repeat():
    files = hospital_files(len(FORMS) * 2, seed=4, size=64)
    keys = [f.key for f in files]
    assert len(set(keys)) == len(keys)
    photos = [f for f in files if f.expected == ANONYMIZED]
    assert len(photos) == len(FORMS) * 2 and len([f for f in files if f.expected == QUARANTINED]) == 8
    assert {sniff(f.data) for f in photos} == {"jpeg", "png", "tiff", "dicom"}
    assert any(" " in k for k in keys) and any(not k.isascii() for k in keys) and any(k.count("/") >= 2 for k in keys)
    assert [f.data for f in hospital_files(len(FORMS) * 2, seed=4, size=64)] == [f.data for f in files]
    assert [f.data for f in hospital_files(len(FORMS) * 2, seed=5, size=64)] != [f.data for f in files]


def test_the_job_writes_them_under_their_keys(tmp_path):
    done = subprocess.run([sys.executable, "jobs/make_hospital_files.py", "--output", str(tmp_path / "files"),
                           "--photos", "3", "--size", "64"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    written = sorted(str(p.relative_to(tmp_path / "files")) for p in (tmp_path / "files").rglob("*") if p.is_file())
    assert written == sorted(f.key for f in hospital_files(3, size=64)) and "11 files" in done.stdout
