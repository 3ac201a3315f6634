"""The jobs across several nodes: a head and two workers of a local `ray.cluster_utils.Cluster`, one
advertising `gpu_node` (a stand-in for a GPU), driven by `multinode_driver.py` in a subprocess.

- the archive job's anonymizing actors and build_mema's generator, asked onto the "GPU" node, run
  there and only there, and both jobs account for everything;
- a worker node removed mid-way through the archive job: the job completes with every file in
  exactly one finished row, and its output equals the undisturbed run's, byte for byte.
"""

import json
import re
import sys
from pathlib import Path

import pytest
import yaml

from medeid import storage
from medeid.archive.manifest import latest, read_manifest
from medeid.synth.hospital_files import hospital_files, write_files
from tests.budgets import fixture_budget, run_bounded

ROOT = Path(__file__).resolve().parents[2]
PHOTOS = 16  # and --batch-size 4: six batches, so a node can be lost with work left on both sides
SUMMARY = f"inputs {PHOTOS + 8} = {PHOTOS} anonymized + 0 no-face + 8 quarantined + 0 skipped"  # and 8 trouble files


@pytest.fixture(scope="module")
def multinode(s3, small_models, mema_world, write_mema_config, tmp_path_factory):
    root = tmp_path_factory.mktemp("multinode")
    bucket = "s3://multinode"
    storage.make_bucket(bucket, s3.settings)
    files = hospital_files(PHOTOS, seed=17)
    write_files(files, f"{bucket}/in", s3.settings)
    (root / "secret").write_text("multi-node archive secret\n")
    archive_config = root / "archive.yaml"
    archive_config.write_text(yaml.safe_dump({"anonymize": {"actors": 2, "actor_resources": {"gpu_node": 0.5}}}))
    # One round of a few rows: where the generator runs is the question here, not how rounds go nor the
    # audits (test_build_mema.py runs them).
    mema_config = write_mema_config(mema_world, root, generator_resources={"gpu_node": 1}, samples=6, max_attempts=1,
                                    audit_attacks=False, eye_filter=False)
    spec = {"input": f"{bucket}/in", "placed": f"{bucket}/placed", "lost": f"{bucket}/lost",
            "model": small_models[0], "detector": small_models[1], "secret_file": str(root / "secret"),
            "archive_config": str(archive_config), "mema_archive": mema_world["archive"],
            "mema_models": mema_world["models"], "mema_index": mema_world["index"],
            "mema_output": f"{mema_world['root']}/mema-multinode",
            "mema_config": mema_config}
    (root / "spec.json").write_text(json.dumps(spec))
    driver = run_bounded([sys.executable, "tests/cluster/multinode_driver.py", root / "spec.json", root / "result.json"],
                         fixture_budget("multinode"), cwd=ROOT)
    assert driver.returncode == 0, driver.stdout[-3000:] + driver.stderr[-3000:]
    result = json.loads((root / "result.json").read_text())
    print("multinode scenarios (s):", {name: run["seconds"] for name, run in result.items() if isinstance(run, dict)})
    return {"result": result, "spec": spec, "files": files,
            "settings": s3.settings}


def finished_rows(manifest: str, settings) -> dict[str, tuple]:
    return {r["input_key"]: (r["status"], r["output_sha256"]) for r in latest(read_manifest(manifest, settings)).to_pylist()}


def test_the_archive_jobs_actors_run_only_on_the_gpu_node(multinode):
    result = multinode["result"]
    placed = result["archive_placed"]
    assert placed["returncode"] == 0, placed["output"]
    assert placed["nodes"] == [result["gpu_node"]]
    assert SUMMARY in placed["output"]


def test_build_mema_generates_only_on_the_gpu_node(multinode):
    result = multinode["result"]
    mema = result["mema_placed"]
    assert mema["returncode"] == 0, mema["output"]
    assert mema["nodes"] == [result["gpu_node"]]
    # It read the --index it was given and built none of its own.
    assert not storage.exists(f"{multinode['spec']['mema_output']}/private/identity_index", multinode["settings"])
    assert "attack audit off in the config" in mema["output"] and "eye-band filter off" in mema["output"]
    sampled = re.search(r"sampled (\d+) = released (\d+) \+ rejected (\d+)", mema["output"])
    assert sampled and int(sampled[2]) > 0 and int(sampled[1]) == int(sampled[2]) + int(sampled[3])


def test_a_worker_node_lost_mid_job_loses_and_duplicates_nothing(multinode):
    result, spec, settings = multinode["result"], multinode["spec"], multinode["settings"]
    lost = result["archive_node_lost"]
    assert lost["returncode"] == 0, lost["output"]
    assert lost["removed"] in (result["cpu_node"], result["gpu_node"])  # a worker holding an actor went away
    assert SUMMARY in lost["output"]
    undisturbed = finished_rows(spec["placed"] + "-manifest", settings)
    assert finished_rows(spec["lost"] + "-manifest", settings) == undisturbed
    assert len(undisturbed) == len(multinode["files"])
    for key, (status, _) in undisturbed.items():
        if status == "anonymized":
            assert storage.read_bytes(f"{spec['lost']}/{key}", settings) == \
                storage.read_bytes(f"{spec['placed']}/{key}", settings), key
