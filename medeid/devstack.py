"""Local infrastructure for the demo, the tests and developers: an S3 server and a Ray cluster.

Both run as child processes on 127.0.0.1 and are stopped when their `with` block ends, also when
it ends in an error. From the shell:

    python -m medeid.devstack run -- CMD ...   # CMD runs with AWS_* and RAY_ADDRESS pointing at them

(The README's demo, which runs on these, is `python -m medeid.demo`.)
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path

from medeid.storage import S3Settings

LOOPBACK = "127.0.0.1"
# Dummy credentials for the local server: it accepts any.
LOCAL_ACCESS_KEY, LOCAL_SECRET_KEY = "medeid-local", "medeid-local-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def _wait_for_http(url: str, timeout_s: float, process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode} before it was ready")
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            time.sleep(0.25)
    raise TimeoutError(f"{what} was not ready at {url} after {timeout_s:.0f} s")


def _stop(process: subprocess.Popen | None, first_signal: int = signal.SIGTERM, grace_s: float = 20.0) -> None:
    """Stop a child and everything in its process group, forcibly if it does not go in time."""
    if process is None or process.poll() is not None:
        return
    for sig, wait in ((first_signal, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _tail(output: bytes | str | None, chars: int = 4000) -> str:
    """The end of a subprocess's captured output (TimeoutExpired holds bytes even in text mode)."""
    if isinstance(output, bytes):
        output = output.decode(errors="replace")
    return (output or "")[-chars:]


def _venv_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment with this interpreter's bin first, so `python` and `ray` are ours."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra or {})
    return env


class LocalS3:
    """An S3-compatible server (moto) on 127.0.0.1 in its own process; any credentials work."""

    def __init__(self, port: int | None = None, log_dir: str | None = None):
        self.port = port or free_port()
        self.log_dir = log_dir
        self._process: subprocess.Popen | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """The AWS variables that point a client (boto3, pyarrow, Ray) at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": LOCAL_ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": LOCAL_SECRET_KEY,
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    @property
    def settings(self) -> S3Settings:
        return S3Settings.from_env(self.env)

    def start(self) -> "LocalS3":
        log = open(Path(self.log_dir) / "moto.log", "ab") if self.log_dir else subprocess.DEVNULL
        self._process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(self.port)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            _wait_for_http(f"{self.endpoint_url}/", 60, self._process, "the local S3 server")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        _stop(self._process, grace_s=5)

    def __enter__(self) -> "LocalS3":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class RayHead:
    """A one-node `ray start --head` cluster on 127.0.0.1, the target of `ray job submit`.

    Every port is picked free, so it can run beside another Ray instance (a test session's).
    Token authentication is off: the cluster listens on loopback only.
    """

    def __init__(self, num_cpus: int = 2, env: dict[str, str] | None = None,
                 object_store_bytes: int = 512 * 1024**2):
        self.num_cpus = num_cpus
        self.extra_env = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", **(env or {})}
        self.object_store_bytes = object_store_bytes
        self.dashboard_port = free_port()
        self._process: subprocess.Popen | None = None
        self._temp_dir: str | None = None

    @property
    def address(self) -> str:
        """The job-submission address (the dashboard)."""
        return f"http://{LOOPBACK}:{self.dashboard_port}"

    @property
    def env(self) -> dict[str, str]:
        """Environment for clients of this cluster: `ray job submit`, `ray.init()`."""
        return _venv_env({**self.extra_env, "RAY_ADDRESS": self.address})

    def start(self) -> "RayHead":
        ray = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
        # A short private temp dir: Ray's socket paths must stay under 107 characters.
        self._temp_dir = tempfile.mkdtemp(prefix="mr", dir="/tmp")
        ports = {flag: free_port() for flag in (
            "--port", "--ray-client-server-port", "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
            "--metrics-export-port", "--runtime-env-agent-port", "--node-manager-port", "--object-manager-port")}
        command = [ray, "start", "--head", "--block", f"--num-cpus={self.num_cpus}",
                   f"--node-ip-address={LOOPBACK}", f"--dashboard-host={LOOPBACK}",
                   f"--dashboard-port={self.dashboard_port}", "--include-dashboard=true", "--disable-usage-stats",
                   f"--object-store-memory={self.object_store_bytes}", f"--temp-dir={self._temp_dir}",
                   *[f"{flag}={port}" for flag, port in ports.items()]]
        self._process = subprocess.Popen(
            command, env=_venv_env(self.extra_env), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            _wait_for_http(f"{self.address}/api/version", 120, self._process, "the Ray head node")
        except BaseException:
            self.stop()
            raise
        return self

    def submit(self, entrypoint: list[str], working_dir: str = ".", timeout_s: float = 900,
               capture: bool = False) -> subprocess.CompletedProcess:
        """`ray job submit` an entrypoint and follow its logs until it ends."""
        ray = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
        command = [ray, "job", "submit", "--address", self.address, "--working-dir", working_dir, "--", *entrypoint]
        try:
            return subprocess.run(command, env=self.env, timeout=timeout_s, text=True, capture_output=capture)
        except subprocess.TimeoutExpired as expired:
            # Say what the job printed before it ran out of time, not only that it did.
            raise TimeoutError(f"{' '.join(entrypoint[:2])} did not finish in {timeout_s:.0f} s; its last output:\n"
                               f"{_tail(expired.stdout)}\n{_tail(expired.stderr)}") from None

    def stop(self) -> None:
        # `ray start --block` shuts its node down cleanly on Ctrl-C (SIGTERM leaves it hanging).
        _stop(self._process, signal.SIGINT, grace_s=10)
        if self._temp_dir:
            shutil.rmtree(self._temp_dir, ignore_errors=True)

    def __enter__(self) -> "RayHead":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class LocalCluster:
    """Several Ray nodes on this machine (`ray.cluster_utils.Cluster`), this process connected as
    the driver: a head and workers, each with its own CPUs and custom resources. A custom resource
    stands for a GPU (`{"gpu_node": 1}`): actors asking for it land only there. For the multi-node
    tests and the scaling benchmark; `remove` takes a node away mid-job as a failure would.

        with LocalCluster([{"num_cpus": 2}, {"num_cpus": 2, "resources": {"gpu_node": 1}}]) as cluster:
            ...   # ray.* calls run on the cluster; cluster.node_ids[i] is worker i's node id
    """

    def __init__(self, workers: list[dict], head_cpus: int = 1, object_store_bytes: int = 128 * 1024**2):
        self.workers, self.head_cpus, self.object_store_bytes = workers, head_cpus, object_store_bytes
        self._cluster, self._nodes, self.node_ids, self.head_id = None, [], [], None
        self._temp_dir, self._saved_tmpdir = None, None

    def __enter__(self) -> "LocalCluster":
        import ray
        from ray.cluster_utils import Cluster

        # `Cluster` records its head in `<ray temp>/ray_current_cluster`, where a plain `ray.init()` looks
        # for the cluster to join. In a temp folder of its own (short: socket paths stay < 107 characters),
        # a cluster killed before its clean-up cannot make later `ray.init()` calls on this machine hang.
        self._temp_dir = tempfile.mkdtemp(prefix="mc", dir="/tmp")
        self._saved_tmpdir = os.environ.get("RAY_TMPDIR")
        os.environ["RAY_TMPDIR"] = self._temp_dir
        self._cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": self.head_cpus, "object_store_memory": self.object_store_bytes,
            "include_dashboard": True})  # the state API (`actor_nodes`) is served by the dashboard
        try:
            self._nodes = [self._cluster.add_node(object_store_memory=self.object_store_bytes, **worker)
                           for worker in self.workers]
            self._cluster.wait_for_nodes()
            ray.init(address=self._cluster.address, log_to_driver=False)
            self.head_id = self._cluster.head_node.node_id
            self.node_ids = [node.node_id for node in self._nodes]
        except BaseException:
            self.__exit__()
            raise
        return self

    @property
    def address(self) -> str:
        """The cluster's GCS address: `RAY_ADDRESS` for jobs run as drivers of this cluster."""
        return self._cluster.address

    def remove(self, node_id: str) -> None:
        """Take a worker node away at once (its raylet and workers killed), as a lost machine would."""
        node = self._nodes[self.node_ids.index(node_id)]
        self._cluster.remove_node(node, allow_graceful=False)

    def __exit__(self, *exc) -> None:
        import ray

        ray.shutdown()
        try:
            if self._cluster is not None:
                self._cluster.shutdown()
        finally:
            if self._saved_tmpdir is None:
                os.environ.pop("RAY_TMPDIR", None)
            else:
                os.environ["RAY_TMPDIR"] = self._saved_tmpdir
            if self._temp_dir:
                shutil.rmtree(self._temp_dir, ignore_errors=True)


class ActorWatch:
    """Node ids seen hosting live actors of `class_fragment`, polled every `every_s` in a thread
    while the `with` block runs (the state API is an HTTP call: not one per row of a stream)."""

    def __init__(self, class_fragment: str, every_s: float = 0.5):
        import threading

        self.class_fragment, self.every_s, self.nodes = class_fragment, every_s, set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.nodes |= actor_nodes(self.class_fragment)
            self._stop.wait(self.every_s)

    def __enter__(self) -> "ActorWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def actor_nodes(class_fragment: str, alive_only: bool = True) -> set[str]:
    """Node ids of the actors whose class name contains `class_fragment` (Ray Data names its pool
    actors after the UDF: `MapWorker(MapBatches(GenerateFaces))`): the live ones, or every one the
    cluster has had (the GCS keeps dead actors and the node they ran on, so short-lived pools are
    not missed between polls)."""
    from ray.util.state import list_actors

    filters = [("state", "=", "ALIVE")] if alive_only else None
    return {a.node_id for a in list_actors(filters=filters, limit=10_000)
            if class_fragment in (a.class_name or "") and a.node_id}


def run_with_stack(command: list[str], bucket: str = "s3://medeid-dev") -> int:
    """Start S3 and Ray, run `command` with their variables, stop both; returns its exit code."""
    from medeid import storage

    with ExitStack() as stack:
        s3 = stack.enter_context(LocalS3())
        storage.make_bucket(bucket, s3.settings)
        head = stack.enter_context(RayHead(env=s3.env))
        print(f"local S3 at {s3.endpoint_url} (bucket {bucket}), Ray at {head.address}", flush=True)
        return subprocess.run(command, env={**head.env, "MEDEID_BUCKET": bucket}).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medeid.devstack", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="verb", required=True)
    run = sub.add_parser("run", help="run a command against a local S3 server and Ray cluster")
    run.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("run needs a command after --")
    return run_with_stack(command)


if __name__ == "__main__":
    sys.exit(main())
