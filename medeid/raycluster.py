"""Joining a Ray cluster without hanging on a dead one.

`ray.init()` with no address joins the cluster recorded in `<ray temp>/ray_current_cluster` (written
by `ray start` and `ray.cluster_utils.Cluster`, removed by `ray stop` and a clean shutdown). When that
cluster died without cleaning up, `ray.init()` retries its GCS forever (`Failed to get cluster ID from
GCS server: TimedOut` every 30 s). Every job calls `init_ray()` instead: it looks first and fails in
seconds with one line that says what to do.

It also gives the job's own process the machine's CPUs back (`driver_threads`).
"""

from __future__ import annotations

import os
import socket
import sys

import ray

PROBE_TIMEOUT_S = 3.0


class DeadClusterError(ConnectionError):
    """The cluster a job would join does not answer."""


def recorded_cluster() -> str | None:
    """The GCS address `ray.init()` would join when given no address, or None."""
    # Ray's own reader, so the record is found where Ray looks ($RAY_TMPDIR, $TMPDIR or /tmp).
    from ray._private.services import find_bootstrap_address

    return find_bootstrap_address(None) or None


def answers(address: str, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """Whether something accepts connections at `host:port` (a live GCS does at once; a dead one's
    port refuses, or, on a lost machine, times out)."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False


def _gcs_address(address: str) -> bool:
    """A plain host:port (not 'auto', 'local', ray:// or http://), which ray.init() dials directly."""
    return "://" not in address and address not in ("auto", "local") and ":" in address


def check_cluster(address: str | None = None) -> str | None:
    """The address `ray.init(address)` would join, after checking that it answers; None when it
    would start a fresh local instance. Raises DeadClusterError when the cluster is gone."""
    given = address or os.environ.get("RAY_ADDRESS") or None
    if given:
        if _gcs_address(given) and not answers(given):
            source = "RAY_ADDRESS" if not address else "the address given"
            raise DeadClusterError(
                f"the Ray cluster at {given} ({source}) does not answer: start it, or unset RAY_ADDRESS "
                "(or set RAY_ADDRESS=local) to run on a fresh local Ray instance")
        return given if given not in ("local",) else None
    recorded = recorded_cluster()
    if recorded and not answers(recorded):
        raise DeadClusterError(
            f"the Ray cluster recorded at {recorded} (the last 'ray start' on this machine) does not answer: "
            "run 'ray stop' to clear the record, or set RAY_ADDRESS=local to start a fresh local Ray instance")
    return recorded


def init_ray(**kwargs) -> None:
    """`ray.init(**kwargs)`, failing fast instead of hanging when the cluster to join is gone.
    Under `ray job submit` RAY_ADDRESS names the job's own (live) cluster: nothing changes. A dead
    cluster ends the job: one line on stderr, exit code 2."""
    try:
        check_cluster(kwargs.get("address"))
    except DeadClusterError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        sys.exit(2)
    ray.init(**kwargs)
    driver_threads()


def driver_threads() -> int:
    """Let torch in this process use every CPU it may run on; returns how many.

    `ray job submit` runs the entrypoint under the job supervisor's OMP_NUM_THREADS=1, set for Ray's own
    workers (which Ray gives CPUs to). A job's driver that computes itself (the evaluation, MeMa's filters
    and audits) then used one core of two: the demo's evaluation ran at 56 % of the machine for 4 minutes.
    """
    import torch

    cpus = len(os.sched_getaffinity(0))
    if torch.get_num_threads() < cpus:
        torch.set_num_threads(cpus)
    return torch.get_num_threads()


def forget_dead_record() -> str | None:
    """Remove the cluster record if its cluster does not answer (a test session's start and end, so a
    cluster killed with its test leaves nothing that makes later `ray.init()` calls hang). Returns the
    address removed."""
    from ray._common.utils import reset_ray_address

    recorded = recorded_cluster()
    if recorded and not answers(recorded, timeout_s=1.0):
        reset_ray_address()
        return recorded
    return None
