"""Time budgets for the suite, enforced and printed.

pytest-timeout charges a test for everything set up on its behalf, so a shared fixture (session or
module scope: the trained detector, the MeMa world, a cluster and the jobs run on it) would be paid
for by whichever test happens to need it first, and the suite's slowest step would be killed in a
test that did nothing wrong. Here each shared fixture runs under its own budget instead (the test's
timer is paused meanwhile and restarts in full), and the end of the run prints every shared
fixture's time against its budget, the slowest test against its limit, and the whole suite against
its 20-minute budget.

A subprocess run by a test or fixture gets a timeout below the budget of that test or fixture
(`subprocess_limit`), so a hang ends with the subprocess's own output, not pytest's kill.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
import pytest_timeout

SUITE_BUDGET_S = 20 * 60  # `make test` on a quiet 2-core machine of the slow kind
# The default for a session- or module-scoped fixture (the variable: for a machine slower still).
SHARED_FIXTURE_BUDGET_S = float(os.environ.get("MEDEID_FIXTURE_BUDGET_S", 300))
FIXTURE_BUDGETS_S = {  # the shared fixtures that need more, by name
    "multinode": 600,  # three jobs on a three-node cluster
    "resumed_run": 480,  # build_mema stopped mid-way, then run to the end through `ray job submit`
}
SUBPROCESS_SHARE = 0.8  # of the enclosing budget, leaving time to report the subprocess's output

_spent: dict[str, float] = {}  # shared fixture -> seconds
_charged: dict[str, float] = {}  # test -> seconds of its own (setup, call, teardown, less shared fixtures)
_started = time.monotonic()


def fixture_budget(name: str) -> float:
    return FIXTURE_BUDGETS_S.get(name, SHARED_FIXTURE_BUDGET_S)


def subprocess_limit(budget_s: float) -> float:
    """A subprocess's timeout inside work whose pytest budget is `budget_s`."""
    return budget_s * SUBPROCESS_SHARE


def run_bounded(command: list, budget_s: float, **kwargs) -> subprocess.CompletedProcess:
    """`subprocess.run(command, capture_output=True, text=True)` under `subprocess_limit(budget_s)`. On
    a hang the subprocess and everything it started (its process group: a Ray cluster, say) is killed
    and the test fails with the subprocess's own last output."""
    limit = subprocess_limit(budget_s)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True, **kwargs)
    try:
        stdout, stderr = process.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"{' '.join(map(str, command[:2]))} did not finish in {limit:.0f} s; its last output:\n"
                    f"{stdout[-3000:]}\n{stderr[-3000:]}", pytrace=False)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(fixturedef, request):
    item = getattr(request, "_pyfuncitem", None)
    settings = pytest_timeout._get_item_settings(item) if item is not None else None
    timed = settings is not None and settings.timeout and not settings.func_only
    if fixturedef.scope == "function" or not timed:
        yield
        return
    hooks = item.config.hook
    budget = fixture_budget(fixturedef.argname)
    hooks.pytest_timeout_cancel_timer(item=item)
    hooks.pytest_timeout_set_timer(item=item, settings=settings._replace(timeout=budget))
    started = time.monotonic()
    try:
        yield
    finally:
        _spent[fixturedef.argname] = time.monotonic() - started
        _charged[item.nodeid] = _charged.get(item.nodeid, 0.0) - _spent[fixturedef.argname]
        hooks.pytest_timeout_cancel_timer(item=item)
        hooks.pytest_timeout_set_timer(item=item, settings=settings)  # the test's own work: its full limit


def pytest_runtest_logreport(report):
    _charged[report.nodeid] = _charged.get(report.nodeid, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    write = terminalreporter.write_line
    terminalreporter.section("time budgets")
    if _charged:
        nodeid, seconds = max(_charged.items(), key=lambda kv: kv[1])
        limit = pytest_timeout.get_env_settings(config).timeout or 0
        write(f"slowest test: {seconds:.0f} s of its {limit:.0f} s limit ({nodeid}; shared fixtures not counted)")
    for name, seconds in sorted(((n, s) for n, s in _spent.items() if s >= 1), key=lambda kv: -kv[1])[:8]:
        budget = fixture_budget(name)
        flag = "" if seconds <= budget / 2 else "  <- over half its budget"
        write(f"shared fixture {name}: {seconds:.0f} s of {budget:.0f} s{flag}")
    total = time.monotonic() - _started
    write(f"suite: {total:.0f} s of its {SUITE_BUDGET_S} s budget"
          f"{'' if total <= SUITE_BUDGET_S else '  <- OVER BUDGET'}")
