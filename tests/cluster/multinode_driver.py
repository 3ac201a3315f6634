"""Runs the real jobs on a three-node local cluster and reports what happened, as JSON.

    python tests/cluster/multinode_driver.py spec.json result.json

A subprocess of `test_multinode.py`, because a test session already has its own Ray instance. The
cluster: a head (no CPUs) and two 2-CPU workers, the second advertising `gpu_node`, which stands for a
GPU. The jobs run as drivers of that cluster (`RAY_ADDRESS`), exactly as submitted, while this
process watches where their actors live and, in the last scenario, takes a worker node away:

1. `anonymize_archive` with its actors asking for `gpu_node`;
2. `build_mema` with its generator asking for `gpu_node`;
3. `anonymize_archive` with actors anywhere, and the worker node holding one of them removed mid-job.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from medeid import storage
from medeid.devstack import LocalCluster, actor_nodes

ROOT = Path(__file__).resolve().parents[2]


def run_job(cluster: LocalCluster, argv: list[str], watch: str, remove_when=None) -> dict:
    """Run a job against the cluster; the nodes its `watch` actors were seen on; optionally remove,
    once `remove_when()` holds, a worker node that holds one of them."""
    env = {**os.environ, "RAY_ADDRESS": cluster.address, "PYTHONPATH": str(ROOT)}
    started = time.monotonic()
    job = subprocess.Popen([sys.executable, *argv], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    seen, removed = set(), None
    while job.poll() is None:
        seen |= actor_nodes(watch)
        if remove_when is not None and removed is None and remove_when():
            workers = [node for node in actor_nodes(watch) if node in cluster.node_ids]
            if workers:
                removed = workers[0]
                cluster.remove(removed)
        time.sleep(0.5)
    output = job.stdout.read()
    # Every actor of that class the cluster has had: pools that lived between polls too (the scenarios
    # watching the same class run in order, and only the first one's nodes are checked).
    seen |= actor_nodes(watch, alive_only=False)
    # The job's own lines (what it says it does) in full, and the tail of everything else.
    own = "\n".join(line for line in output.splitlines() if line.startswith("[") and "INFO" not in line)
    return {"returncode": job.returncode, "output": own[-6000:] + "\n" + output[-6000:], "nodes": sorted(seen),
            "removed": removed,
            "seconds": round(time.monotonic() - started, 1)}


def main() -> int:
    spec = json.loads(Path(sys.argv[1]).read_text())
    # The head runs no work (as on a real cluster): every actor lives on a worker, so removing one matters.
    with LocalCluster([{"num_cpus": 2}, {"num_cpus": 2, "resources": {"gpu_node": 1}}], head_cpus=0) as cluster:
        result = {"head": cluster.head_id, "cpu_node": cluster.node_ids[0], "gpu_node": cluster.node_ids[1]}
        archive = ["jobs/anonymize_archive.py", "--input", spec["input"], "--model", spec["model"],
                   "--detector", spec["detector"], "--secret-file", spec["secret_file"], "--batch-size", "4",
                   "--report-samples", "0"]
        result["archive_placed"] = run_job(cluster, [*archive, "--output", spec["placed"], "--run-id", "placed",
                                                     "--config", spec["archive_config"]], "AnonymizeFiles")
        # The models named one by one, with no evaluator, and the world's index: where the generator runs
        # is the question here, not the audits (test_build_mema.py runs those).
        models = [arg for name in ("generator", "recognizer", "medical")
                  for arg in (f"--{name}", f"{spec['mema_models']}/{name}")]
        result["mema_placed"] = run_job(cluster, ["jobs/build_mema.py", "--archive", spec["mema_archive"], *models,
                                                  "--index", spec["mema_index"], "--output", spec["mema_output"],
                                                  "--config", spec["mema_config"]], "GenerateFaces")
        manifest = spec["lost"] + "-manifest/run=lost"

        def two_batches_done() -> bool:
            return storage.exists(manifest) and len(storage.list_files(manifest)) >= 2

        result["archive_node_lost"] = run_job(cluster, [*archive, "--output", spec["lost"], "--run-id", "lost",
                                                        "--actors", "2"], "AnonymizeFiles", two_batches_done)
    Path(sys.argv[2]).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
