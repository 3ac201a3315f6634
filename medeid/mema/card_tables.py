"""Reading a MeMa build for its card: the light columns of every table, and a few images by id."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from medeid import schema, storage
from medeid.mema.attack_audit import ATTACKS, AUDITOR
from medeid.mema.statistics import CohortStatistics

CONDITIONS, SHARDS, REJECTIONS, AUDIT, STATISTICS, CARD = (
    "conditions", "shards", "rejections", "audit", "statistics.json", "card")
TSTR_FIGURES = "tstr/figures.json"  # `mema/tstr.py` writes it
FACE_DISTANCE = "audit/face_distance.json"  # `mema/face_distance.py` writes it
STAGES = schema.MEMA_STAGES


@dataclass(frozen=True)
class MeMaTables:
    """The light columns of a built MeMa, plus where the shards live for reading sample images."""

    conditions: pa.Table
    released: pa.Table  # shards without image bytes; `has_mask` replaces `lesion_mask`
    rejections: pa.Table
    audit: pa.Table | None  # None: the audit was not run
    attacks: pa.Table | None  # schema.MEMA_ATTACKS; None: the attack audit was not run
    auditor: dict | None  # the periocular auditor's threshold and strength (`attack_audit.train_auditor`)
    tstr: dict | None  # train on MeMa, test on real (`mema/tstr.py`'s figures.json); None: not run
    face_distance: dict | None  # Fréchet distance to the real photos (`mema/face_distance.py`); None: not run
    cohort: CohortStatistics | None
    shards_fs: object
    shard_paths: list[str]


def parquet_paths(uri: str, settings) -> tuple[object, list[str]]:
    """The Parquet files under `uri` as paths inside its pyarrow filesystem (none if it is missing)."""
    fs, base = storage.filesystem(uri, settings)
    files = [f for f in storage.list_files(uri, settings) if f.endswith(".parquet")]
    return fs, [f"{base}/{storage.relative_key(uri, f)}" for f in files]


def read_columns(fs, paths: list[str], table_schema: pa.Schema, columns) -> pa.Table:
    """`columns` (names, or name -> expression) of every file; the schema makes empty and full reads agree."""
    dataset = pads.dataset(paths, schema=table_schema, filesystem=fs, format="parquet")
    return dataset.to_table(columns=columns)


def load_tables(root: str, settings) -> MeMaTables:
    fs, paths = parquet_paths(storage.join(root, CONDITIONS), settings)
    if not paths:
        # A build writes its conditions before generating anything: without them, the root is wrong.
        raise FileNotFoundError(f"no {CONDITIONS}/*.parquet under {root}: not the root of a MeMa build")
    conditions = read_columns(fs, paths, schema.MEMA_CONDITION, ["sample_id", "age", "sex", "disease"])

    shards_fs, shard_paths = parquet_paths(storage.join(root, SHARDS), settings)
    released_columns = {name: pc.field(name) for name in (
        "sample_id", "attempt", "age", "sex", "disease", "predicted_disease", "nearest_similarity",
        "identity_threshold")}
    # Masks are images too: test them for null in the scan instead of keeping their bytes.
    released_columns["has_mask"] = pc.field("lesion_mask").is_valid()
    released = read_columns(shards_fs, shard_paths, schema.MEMA_IMAGE, released_columns)

    fs, paths = parquet_paths(storage.join(root, REJECTIONS), settings)
    rejections = read_columns(fs, paths, schema.MEMA_REJECTION, [
        "sample_id", "attempt", "disease", "stage", "reason", "figure", "threshold", "nearest_similarity"])

    fs, paths = parquet_paths(storage.join(root, AUDIT), settings)
    audit = (read_columns(fs, paths, schema.MEMA_AUDIT, ["sample_id", "evaluator_similarity", "evaluator_threshold"])
             if paths else None)

    fs, paths = parquet_paths(storage.join(root, ATTACKS), settings)
    attacks = read_columns(fs, paths, schema.MEMA_ATTACKS, schema.MEMA_ATTACKS.names) if paths else None
    auditor_uri = storage.join(root, ATTACKS, AUDITOR)
    auditor = json.loads(storage.read_bytes(auditor_uri, settings)) if storage.exists(auditor_uri, settings) else None

    tstr_uri = storage.join(root, TSTR_FIGURES)
    tstr = json.loads(storage.read_bytes(tstr_uri, settings)) if storage.exists(tstr_uri, settings) else None
    distance_uri = storage.join(root, FACE_DISTANCE)
    distance = (json.loads(storage.read_bytes(distance_uri, settings)) if storage.exists(distance_uri, settings)
                else None)

    statistics_uri = storage.join(root, STATISTICS)
    cohort = CohortStatistics.load(statistics_uri, settings) if storage.exists(statistics_uri, settings) else None
    return MeMaTables(conditions, released, rejections, audit, attacks, auditor, tstr, distance, cohort, shards_fs,
                      shard_paths)


def read_images(fs, paths: list[str], sample_ids: list[str], columns: list[str]) -> dict[str, dict]:
    """`columns` of the shard rows with these sample ids, reading only the row groups that hold them."""
    wanted, found = set(sample_ids), {}
    for path in paths:
        with fs.open_input_file(path) as handle:
            shard = pq.ParquetFile(handle)
            for group in range(shard.num_row_groups):
                ids = shard.read_row_group(group, columns=["sample_id"])["sample_id"].to_pylist()
                rows = [i for i, sample_id in enumerate(ids) if sample_id in wanted]
                if rows:
                    table = shard.read_row_group(group, columns=["sample_id", *columns]).take(rows)
                    found.update({row["sample_id"]: row for row in table.to_pylist()})
        if len(found) == len(wanted):
            break
    return found

