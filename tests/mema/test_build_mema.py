"""build_mema end to end: a run stopped mid-way and resumed with `ray job submit` on a `ray start --head`
cluster, and real photos fed to the identity filter as if generated."""

import json
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from medeid import codecs, schema, storage
from medeid.devstack import RayHead
from medeid.mema.attack_audit import ATTACKS
from medeid.mema.generation import FaceGenerator
from medeid.models.generator import load_pipeline
from medeid.models.identity_index import IdentityIndex
from medeid.pipelines.mema import CONDITIONS, REJECTIONS, SHARDS, attempt_seed, read_landed
from medeid.pipelines.mema_filters import IdentityFilter
from tests.budgets import fixture_budget, subprocess_limit

COLUMNS = ["sample_id", "attempt", "disease"]


@pytest.fixture(scope="module")
def head(s3):
    with RayHead(env=s3.env) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def config_path(mema_world, tmp_path_factory, write_mema_config):
    # Rounds of 1 then 2 attempts a row: the second round's groups exercise surplus attempts (a third
    # round would only repeat the first's start-up: ~30 s of actors for nothing new).
    return write_mema_config(mema_world, tmp_path_factory.mktemp("mema-config"), batch_size=2, max_attempts=3)


def build_command(world: dict, output: str, config: str) -> list[str]:
    return ["python", "jobs/build_mema.py", "--archive", world["archive"], "--models", world["models"],
            "--output", output, "--config", config]


@pytest.fixture(scope="module")
def resumed_run(head, mema_world, config_path):
    """build_mema submitted through the Jobs API and stopped once its first shard lands, then run again
    to the end with `ray job submit`: the one build every test here reads (a clean build besides it
    would double the module's time; the resumed one must meet every invariant a clean one does)."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    started = time.monotonic()
    output = f"{mema_world['root']}/mema-resumed"
    command = build_command(mema_world, output, config_path)
    client = JobSubmissionClient(head.address)
    job_id = client.submit_job(entrypoint=" ".join(command), runtime_env={"working_dir": "."})
    deadline = started + 150
    while not (storage.exists(f"{output}/{SHARDS}")
               and any(f.endswith(".parquet") for f in storage.list_files(f"{output}/{SHARDS}"))):
        assert client.get_job_status(job_id) in (JobStatus.PENDING, JobStatus.RUNNING), client.get_job_logs(job_id)
        assert time.monotonic() < deadline, "no shard landed in 150 s"
        time.sleep(0.5)
    client.stop_job(job_id)
    while client.get_job_status(job_id) not in (JobStatus.STOPPED, JobStatus.SUCCEEDED, JobStatus.FAILED):
        time.sleep(0.5)
    assert client.get_job_status(job_id) == JobStatus.STOPPED
    before = landed(output, RELEASED_COLUMNS, REJECTED_COLUMNS)

    left = subprocess_limit(fixture_budget("resumed_run")) - (time.monotonic() - started)
    job = head.submit(command, capture=True, timeout_s=left)
    assert job.returncode == 0, job.stdout[-4000:] + job.stderr[-4000:]
    return {"output": output, "stdout": job.stdout, "before": before}


RELEASED_COLUMNS = ["sample_id", "attempt", "seed", "disease", "prompt", "image"]
REJECTED_COLUMNS = ["sample_id", "attempt", "seed", "disease", "stage", "reason"]


def landed(output: str, released_columns=COLUMNS, rejected_columns=COLUMNS + ["stage"]):
    return (read_landed(output, SHARDS, released_columns).to_pylist(),
            read_landed(output, REJECTIONS, rejected_columns).to_pylist())


def test_build_mema_via_ray_job_submit(resumed_run, mema_world):
    output, stdout = resumed_run["output"], resumed_run["stdout"]
    released, rejected = landed(output)
    requested = read_landed(output, CONDITIONS, ["sample_id", "disease"]).to_pylist()
    assert len(requested) == 12
    released_ids = [r["sample_id"] for r in released]
    assert released and rejected and len(set(released_ids)) == len(released_ids)
    # Every requested row is released once, its first attempt that passed, or left unfilled after
    # max_attempts (3) rejections. Attempts come in rounds of 1 and 2; nothing else was generated.
    attempts = {}
    for r in released + rejected:
        attempts.setdefault(r["sample_id"], []).append(r["attempt"])
    assert set(attempts) == {r["sample_id"] for r in requested}
    unfilled = 0
    for sample_id, tried in attempts.items():
        assert sorted(tried) == list(range(len(tried))) and len(tried) in (1, 3)
        stages = {r["attempt"]: r["stage"] for r in rejected if r["sample_id"] == sample_id}
        if sample_id in released_ids:
            first = next(r["attempt"] for r in released if r["sample_id"] == sample_id)
            assert all(stages[a] == "plausibility" for a in range(first))  # earlier ones failed a filter
            assert all(stages[a] in ("plausibility", "surplus") for a in tried if a > first)  # same round only
            assert len(tried) == {0: 1, 1: 3, 2: 3}[first]
        else:
            unfilled += 1
            assert len(tried) == 3 and set(stages.values()) == {"plausibility"}
    # Only the plausibility filter can reject here (thresholds at 0, recognisers at 0.99), and a
    # second round's group filled by its first attempt makes its second one surplus.
    assert {r["stage"] for r in rejected} <= {"plausibility", "surplus"}
    assert (f"sampled {len(released) + len(rejected)} = released {len(released)} + rejected {len(rejected)}"
            in stdout)
    assert f"requested 12 = released {len(released)} + unfilled {unfilled}: reconciled" in stdout

    fs, path = storage.filesystem(f"{output}/{SHARDS}")
    shards = pq.read_table(path, filesystem=fs)
    assert shards.schema.equals(schema.MEMA_IMAGE, check_metadata=False)
    assert shards["predicted_disease"].to_pylist() == shards["disease"].to_pylist()
    first = shards.slice(0, 1).to_pylist()[0]
    assert codecs.decode(first["image"]).shape == (32, 32, 3)
    assert first["prompt"].startswith("a clinical photo of a") and first["generator_version"]
    assert first["nearest_similarity"] < first["identity_threshold"] == pytest.approx(0.99)
    audit = read_landed(output, "audit", ["sample_id", "evaluator_similarity"]).to_pylist()
    assert sorted(a["sample_id"] for a in audit) == sorted(released_ids)
    card = storage.read_bytes(f"{output}/card/README.md").decode()
    assert "MeMa" in card and storage.exists(f"{output}/card/similarity.png")
    # The eye-band attackers looked at every released image too, and the card has their bars.
    fs, path = storage.filesystem(f"{output}/{ATTACKS}/attacks.parquet")
    assert sorted(pq.read_table(path, filesystem=fs)["sample_id"].to_pylist()) == sorted(released_ids)
    assert "eye band re-identifies" in card and "eye band copies" in card
    assert storage.exists(f"{output}/private/attacks/nearest_real.png")
    # The world's medical model is untrained and has no real-trained figures: nothing to compare with, said so.
    assert "train-on-MeMa test skipped: no metrics.json beside the medical model" in stdout
    assert "eye-band filter: a periocular recogniser of its own on 60 real photos" in stdout
    if len(released) >= 2:  # the face distance of the released images, by the evaluator, is on the card
        distance = json.loads(storage.read_bytes(f"{output}/audit/face_distance.json"))
        assert distance["images"] >= 2 and distance["mema_to_real"] > 0 and distance["real_to_real"] > 0
        assert "face distance to the real photos" in stdout and "| MeMa to real |" in card
    assert "**Not run** (no `tstr/figures.json`)" in card
    assert not storage.exists(f"{output}/card/nearest_real.png")
    run = json.loads(storage.read_bytes(f"{output}/run.json"))
    assert run["reconciled"] and run["released"] == len(released)


def test_a_killed_build_resumes_without_duplicates_or_gaps(resumed_run, mema_world):
    released, rejected = landed(resumed_run["output"], RELEASED_COLUMNS, REJECTED_COLUMNS)
    before_released, before_rejected = resumed_run["before"]
    assert before_released  # the first run was stopped with work landed ...
    attempts = [(r["sample_id"], r["attempt"]) for r in released + rejected]
    assert len(attempts) == len(set(attempts))  # ... and the re-run wrote nothing twice
    key = lambda r: (r["sample_id"], r["attempt"])  # noqa: E731
    # Nothing lost or redone: what landed before the stop is still there, unchanged.
    assert {key(r): r for r in released} | {key(r): r for r in before_released} == {key(r): r for r in released}
    assert {key(r): r for r in rejected} | {key(r): r for r in before_rejected} == {key(r): r for r in rejected}
    # The re-run drew what an uninterrupted run would have: every attempt's seed follows from its row's,
    # and every released image is the one its seed and prompt draw.
    seeds = {r["sample_id"]: r["seed"] for r in read_landed(resumed_run["output"], CONDITIONS,
                                                               ["sample_id", "seed"]).to_pylist()}
    assert all(r["seed"] == attempt_seed(seeds[r["sample_id"]], r["attempt"]) for r in released + rejected)
    generator = FaceGenerator(load_pipeline(f"{mema_world['models']}/generator"), steps=2, guidance=2.0)
    drawn = generator.generate([r["prompt"] for r in released], [r["seed"] for r in released])
    stored = np.stack([codecs.decode(r["image"]) for r in released]).astype(int)
    assert np.abs(drawn.astype(int) - stored).max() <= 2  # float reductions may differ by a level


def test_real_photos_fed_as_generated_are_all_rejected(mema_world):
    """The archive's own photos, as if the generator had drawn them: every one matches its patient."""
    recognizer = f"{mema_world['models']}/recognizer"
    index = IdentityIndex.from_uri(mema_world["index"])
    keys = mema_world["metadata"]["photo_key"].to_pylist()
    images = np.stack([codecs.decode(storage.read_bytes(f"{mema_world['archive']}/{k}")) for k in keys])
    n = len(keys)
    batch = {"sample_id": np.array(keys, dtype=object), "image": images,
             "stage": np.array([""] * n, dtype=object), "reason": np.array([""] * n, dtype=object),
             "figure": np.full(n, np.nan, np.float32), "threshold": np.full(n, np.nan, np.float32)}
    open_set = index.open_set_threshold(0.01)
    out = IdentityFilter(recognizer, index.to_ref(), margin=0.0, open_set=open_set)(batch)
    assert n == 60 and list(out["stage"]) == ["identity"] * n
    assert all("too close to a real patient" in r for r in out["reason"])
    assert (out["nearest_similarity"] >= 0.99).all()
    # The open-set figure, where it is above the recogniser's per-pair threshold, is the rule.
    per_pair = IdentityFilter(recognizer, index.to_ref(), margin=0.0).threshold
    assert out["identity_threshold"][0] == pytest.approx(max(per_pair, open_set))
    lenient = IdentityFilter(recognizer, index.to_ref(), margin=0.0, open_set=1.01)(batch)
    assert not any(lenient["stage"]) and np.allclose(lenient["identity_threshold"], 1.01)
