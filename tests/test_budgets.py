"""The suite's time budgets: a shared fixture is not charged to the test that first needs it, and
runs under a budget of its own."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUITE = '''
import time
import pytest

@pytest.fixture(scope="session")
def slow_world():
    time.sleep(3)
    return "built"

def test_first(slow_world):
    time.sleep(0.5)
'''


def run_suite(tmp_path, timeout_s: float, fixture_budget_s: float) -> subprocess.CompletedProcess:
    (tmp_path / "test_suite.py").write_text(SUITE)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.budgets", "-p", "no:cacheprovider",
                           f"--timeout={timeout_s}", "--rootdir", str(tmp_path), str(tmp_path / "test_suite.py")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"MEDEID_FIXTURE_BUDGET_S": str(fixture_budget_s), "PATH": "/usr/bin:/bin",
                               "PYTHONPATH": str(ROOT)})


def test_a_shared_fixture_is_not_charged_to_the_first_test(tmp_path):
    # The test's own limit is 2 s; the fixture takes 3 s within its own 30 s.
    run = run_suite(tmp_path, timeout_s=2, fixture_budget_s=30)
    assert run.returncode == 0, run.stdout[-2000:]
    assert "shared fixture slow_world: 3 s of 30 s" in run.stdout
    charged = re.search(r"slowest test: (\d+) s of its 2 s limit", run.stdout)
    assert charged and int(charged[1]) <= 1, run.stdout[-1000:]


def test_a_shared_fixture_over_its_budget_fails(tmp_path):
    run = run_suite(tmp_path, timeout_s=60, fixture_budget_s=1)
    assert run.returncode != 0
    assert "Timeout (>1.0s)" in run.stdout
