"""The MeMa build: condition rows -> generator actors -> face quality -> identity filter -> medical
plausibility -> Parquet shards, streamed with Ray Data (the filters: `medeid.pipelines.mema_filters`).

Every row carries `stage`/`reason` columns: a stage that rejects a row fills them and later stages
pass it through untouched, so one stream ends in one writer that puts released rows in `shards/`
and rejected attempts in `rejections/`. Files are named by their rows' (sample id, attempt) pairs,
so a batch retried after a crash overwrites its own files instead of adding copies.

A condition row whose attempts are all rejected is tried again with new seeds in the next round, up
to `max_attempts`: rejections then thin no condition out, and released P(age, sex, disease) stays
the requested one. Each round doubles a pending row's attempts so far (1, then 2 more, then 4 ...):
a round's start-up costs as much as a hundred small images, so rows that keep failing get a group
of attempts at once. The stream keeps each group in one block, so the writer sees it whole and
releases its first attempt that passed; later ones that also passed are recorded as `surplus`. A
row's group depends only on what landed for that row, so a re-run after a crash reads what landed
and carries on exactly as an uninterrupted run would have.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
import ray
import torch

from medeid import codecs, schema, storage
from medeid.config import MemaConfig
from medeid.mema.generation import FaceGenerator, keep_region
from medeid.mema.prompts import prompt
from medeid.models.generator import load_pipeline
from medeid.pipelines.mema_filters import (
    IdentityFilter,
    MedicalPlausibility,
    face_quality,
    is_rejected,
    own_verdicts,
    reject,
)

CONDITIONS, SHARDS, REJECTIONS, AUDIT = "conditions", "shards", "rejections", "audit"
STATISTICS = "statistics.json"
STAGES = schema.MEMA_STAGES
ACTOR_CPUS = 0.5  # actors holding every CPU starve the tasks that feed them (see STACK-NOTES)
# The filters and the writer use a small share of a core: asking for less leaves room for the
# writer's tasks beside two generator actors on two cores, so shards land during a round, not after it.
LIGHT_CPUS = 0.25


def attempt_seed(seed: int, attempt: int) -> int:
    """The generation seed of a row's `attempt`: the row's own seed first, then fresh ones."""
    return int(seed) if attempt == 0 else int(np.random.default_rng([int(seed), attempt]).integers(0, 2**31 - 1))


class GenerateFaces:
    """Actor: the fine-tuned pipeline, loaded once; each batch of condition rows becomes images."""

    def __init__(self, generator_uri: str, cfg: dict, template: str, archive_root: str | None = None,
                 settings: storage.S3Settings | None = None):
        self.cfg, self.template, self.archive_root, self.settings = MemaConfig(**cfg), template, archive_root, settings
        if self.cfg.threads_per_generator:  # Ray gives a fractional-CPU actor one thread
            torch.set_num_threads(self.cfg.threads_per_generator)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        pipe = load_pipeline(generator_uri, settings, dtype=torch.float16 if device == "cuda" else torch.float32)
        self.generator = FaceGenerator(pipe.to(device), self.cfg.steps, self.cfg.guidance, self.cfg.strength)
        self.version = _generator_version(generator_uri, settings)

    def _source(self, key: str, mask_key: str | None) -> tuple[np.ndarray, np.ndarray | None]:
        image = codecs.decode(storage.read_bytes(storage.join(self.archive_root, key), self.settings))
        mask = None
        if mask_key:
            mask = codecs.decode(storage.read_bytes(storage.join(self.archive_root, mask_key), self.settings), "L") > 127
        return image, mask

    def __call__(self, batch: dict) -> dict:
        n = len(batch["sample_id"])
        rows = [{k: batch[k][i] for k in ("age", "sex", "disease", "laterality")} | {
            "findings": json.loads(batch["findings_json"][i])} for i in range(n)]
        prompts = [prompt(r, self.template) for r in rows]
        seeds = [int(s) for s in batch["seed"]]
        sources = keep = None
        if self.cfg.strategy != "txt2img":
            loaded = [self._source(k, m or None) for k, m in zip(batch["source_key"], batch["source_mask_key"])]
            sources = [image for image, _ in loaded]
            keep = [keep_region(self.generator.resolution, mask) for _, mask in loaded]
        images = self.generator.generate(prompts, seeds, self.cfg.strategy, sources, keep)
        return {**batch, "image": images, "prompt": np.array(prompts, dtype=object),
                "generator_version": np.array([self.version] * n, dtype=object),
                "stage": np.array([""] * n, dtype=object), "reason": np.array([""] * n, dtype=object),
                "figure": np.full(n, np.nan, np.float32), "threshold": np.full(n, np.nan, np.float32)}


def _generator_version(uri: str, settings) -> str:
    info = storage.join(uri, "generator.json")
    if storage.exists(info, settings):
        return json.loads(storage.read_bytes(info, settings))["version"]
    return "unversioned:" + hashlib.sha256(uri.encode()).hexdigest()[:12]


def _part_name(batch: dict) -> str:
    pairs = sorted(f"{s}:{a}" for s, a in zip(batch["sample_id"], batch["attempt"]))
    return "part-" + hashlib.sha256("\n".join(pairs).encode()).hexdigest()[:24] + ".parquet"


def _condition_columns(batch: dict, rows: np.ndarray) -> dict:
    return {
        "sample_id": [str(batch["sample_id"][i]) for i in rows],
        "attempt": [int(batch["attempt"][i]) for i in rows],
        "seed": [int(batch["seed"][i]) for i in rows],
        "age": [int(batch["age"][i]) for i in rows],
        "sex": [str(batch["sex"][i]) for i in rows],
        "disease": [str(batch["disease"][i]) for i in rows],
        "laterality": [str(batch["laterality"][i]) for i in rows],
        "severity": [int(batch["severity"][i]) for i in rows],
        "findings": [json.loads(batch["findings_json"][i]) for i in rows],
        "strategy": [str(batch["strategy"][i]) for i in rows],
    }


def _optional_float(value) -> float | None:
    return None if value is None or math.isnan(float(value)) else float(value)


def released_table(batch: dict, rows: np.ndarray) -> pa.Table:
    columns = _condition_columns(batch, rows) | {
        "prompt": [str(batch["prompt"][i]) for i in rows],
        "source_key": [str(batch["source_key"][i]) or None for i in rows],
        "generator_version": [str(batch["generator_version"][i]) for i in rows],
        "image": [codecs.encode(np.ascontiguousarray(batch["image"][i]), "png") for i in rows],
        "width": [int(batch["image"][i].shape[1]) for i in rows],
        "height": [int(batch["image"][i].shape[0]) for i in rows],
        "sharpness": [float(batch["sharpness"][i]) for i in rows],
        "nearest_similarity": [float(batch["nearest_similarity"][i]) for i in rows],
        "identity_threshold": [float(batch["identity_threshold"][i]) for i in rows],
        "predicted_disease": [str(batch["predicted_disease"][i]) for i in rows],
        "disease_confidence": [float(batch["disease_confidence"][i]) for i in rows],
        "lesion_mask": [bytes(batch["lesion_mask"][i]) or None for i in rows],
        "mask_source": [str(batch["mask_source"][i]) or None for i in rows],
    }
    return pa.table(columns, schema=schema.MEMA_IMAGE)


def rejected_table(batch: dict, rows: np.ndarray) -> pa.Table:
    columns = _condition_columns(batch, rows) | {
        "stage": [str(batch["stage"][i]) for i in rows],
        "reason": [str(batch["reason"][i]) for i in rows],
        "figure": [_optional_float(batch["figure"][i]) for i in rows],
        "threshold": [_optional_float(batch["threshold"][i]) for i in rows],
        "nearest_similarity": [_optional_float(batch["nearest_similarity"][i]) for i in rows],
    }
    return pa.table(columns, schema=schema.MEMA_REJECTION)


def settle_groups(batch: dict) -> dict:
    """Each condition row's attempt group: the first attempt that passed every filter is released,
    later ones that passed too become `surplus`. A group must be whole in its batch."""
    batch = own_verdicts(batch)
    rows_of: dict[str, list[int]] = {}
    for i, sample_id in enumerate(batch["sample_id"]):
        rows_of.setdefault(str(sample_id), []).append(i)
    for sample_id, rows in rows_of.items():
        expected = int(batch["group_size"][rows[0]])
        if len(rows) != expected:
            raise RuntimeError(f"the attempt group of {sample_id} reached the writer split ({len(rows)} of "
                               f"{expected} attempts in one batch): releasing from it could duplicate the row")
        passed = sorted((int(batch["attempt"][i]), i) for i in rows if not batch["stage"][i])
        for _, i in passed[1:]:
            reject(batch, i, "surplus", f"the row was filled by its attempt {passed[0][0]} in the same round",
                   np.nan, np.nan)
    return batch


def write_parts(batch: dict, *, output_uri: str, settings: storage.S3Settings | None = None) -> dict:
    """Task: released rows to `shards/`, rejected attempts to `rejections/`; returns their counts."""
    batch = settle_groups(batch)
    rejected = is_rejected(batch)
    name = _part_name(batch)
    for folder, rows, make in ((SHARDS, np.flatnonzero(~rejected), released_table),
                               (REJECTIONS, np.flatnonzero(rejected), rejected_table)):
        if len(rows):
            storage.write_table(make(batch, rows), storage.join(output_uri, folder, name), settings)
    counts = {"released": [int((~rejected).sum())], "rejected": [int(rejected.sum())]}
    for stage in STAGES:
        counts[f"rejected_{stage}"] = [int(sum(1 for s in batch["stage"] if s == stage))]
    return counts


def read_landed(output_uri: str, folder: str, columns: list[str], settings=None) -> pa.Table:
    """`columns` of every Parquet file under `<output>/<folder>`; empty when there are none."""
    table_schema = {SHARDS: schema.MEMA_IMAGE, REJECTIONS: schema.MEMA_REJECTION, CONDITIONS: schema.MEMA_CONDITION,
                    AUDIT: schema.MEMA_AUDIT}[folder]
    return storage.read_tables(storage.join(output_uri, folder), table_schema, settings, columns)


@dataclass
class Progress:
    """What landed so far: attempts by (sample id) and the released sample ids."""

    released: set[str] = field(default_factory=set)
    attempts: dict[str, int] = field(default_factory=dict)

    @classmethod
    def read(cls, output_uri: str, settings=None) -> "Progress":
        released = read_landed(output_uri, SHARDS, ["sample_id", "attempt"], settings)
        rejected = read_landed(output_uri, REJECTIONS, ["sample_id", "attempt"], settings)
        attempts: dict[str, int] = {}
        for table in (released, rejected):
            for sample_id, attempt in zip(table["sample_id"].to_pylist(), table["attempt"].to_pylist()):
                attempts[sample_id] = max(attempts.get(sample_id, 0), attempt + 1)
        return cls(set(released["sample_id"].to_pylist()), attempts)


def pending_rows(conditions: list[dict], progress: Progress, cfg: MemaConfig, sources: "SourcePicker | None") -> list[dict]:
    """For each row not yet released that has attempts left, its next group of attempts (as many as
    it has had, at least one, within `max_attempts`), ready for the stream; a group's rows are adjacent."""
    rows = []
    for row in conditions:
        first = progress.attempts.get(row["sample_id"], 0)
        if row["sample_id"] in progress.released or first >= cfg.max_attempts:
            continue
        group = range(first, min(2 * first + 1, cfg.max_attempts))
        for attempt in group:
            seed = attempt_seed(row["seed"], attempt)
            source_key, mask_key = sources.pick(row, seed) if sources else ("", "")
            rows.append({"sample_id": row["sample_id"], "attempt": attempt, "group_size": len(group), "seed": seed,
                         "age": int(row["age"]), "sex": row["sex"], "disease": row["disease"],
                         "laterality": row["laterality"], "severity": int(row["severity"]),
                         "findings_json": json.dumps(list(row["findings"])), "strategy": cfg.strategy,
                         "source_key": source_key, "source_mask_key": mask_key})
    return rows


def group_blocks(rows: list[dict], target_rows: int) -> list[pa.Table]:
    """The rows as blocks of about `target_rows`, never splitting a row's attempt group."""
    blocks, current = [], []
    for _, group in itertools.groupby(rows, key=lambda r: r["sample_id"]):
        group = list(group)
        if current and len(current) + len(group) > target_rows:
            blocks.append(current)
            current = []
        current += group
    if current:
        blocks.append(current)
    return [pa.Table.from_pylist(block) for block in blocks]


class SourcePicker:
    """img2img and inpaint: a real photo with the row's condition (same disease and laterality when
    there is one), drawn by the attempt's seed."""

    def __init__(self, metadata: pa.Table):
        self.by_condition: dict[tuple, list[tuple[str, str]]] = {}
        for row in metadata.select(["photo_key", "mask_key", "disease", "laterality"]).to_pylist():
            entry = (row["photo_key"], row["mask_key"] or "")
            self.by_condition.setdefault((row["disease"], row["laterality"]), []).append(entry)
            self.by_condition.setdefault((row["disease"],), []).append(entry)

    def pick(self, row: dict, seed: int) -> tuple[str, str]:
        options = self.by_condition.get((row["disease"], row["laterality"])) or self.by_condition.get((row["disease"],))
        if not options:
            raise ValueError(f"no real photo of {row['disease']} to start {row['sample_id']} from")
        return options[int(np.random.default_rng(seed).integers(len(options)))]


@dataclass(frozen=True)
class Models:
    generator: str
    recognizer: str
    medical: str
    index: str
    evaluator: str | None = None
    evaluator_index: str | None = None


def mema_stream(rows: list[dict], models: Models, index_ref, cfg: MemaConfig, template: str, output_uri: str,
                archive_root: str, settings=None, eye_ref=None, open_set: float | None = None) -> ray.data.Dataset:
    """The stream of one round: its rows are written as a side effect; it yields their counts.
    `eye_ref`: the object ref of the identity filter's eye-band check (`mema.eye_filter`), or None;
    `open_set`: the index's open-set threshold for the full-face filter (`IdentityFilter`), or None.

    Every stage takes whole blocks as batches (`batch_size=None`), so an attempt group, one block's
    rows from the start, reaches the writer whole.
    """
    actor_cpus = 1.0 if cfg.gpus_per_generator else ACTOR_CPUS
    return (
        ray.data.from_arrow(group_blocks(rows, cfg.batch_size))
        .map_batches(GenerateFaces, batch_size=None, batch_format="numpy",
                     fn_constructor_kwargs={"generator_uri": models.generator, "cfg": asdict(cfg), "template": template,
                                            "archive_root": archive_root, "settings": settings},
                     compute=ray.data.ActorPoolStrategy(size=cfg.generator_actors), num_cpus=actor_cpus,
                     num_gpus=cfg.gpus_per_generator or None, resources=cfg.generator_resources)
        .map_batches(face_quality, batch_format="numpy", batch_size=None, num_cpus=LIGHT_CPUS,
                     fn_kwargs={"min_sharpness": cfg.min_sharpness, "min_contrast": cfg.min_contrast})
        .map_batches(IdentityFilter, batch_size=None, batch_format="numpy",
                     fn_constructor_args=(models.recognizer, index_ref, cfg.identity_margin, settings,
                                          [eye_ref] if eye_ref is not None else None, open_set),
                     compute=ray.data.ActorPoolStrategy(size=cfg.filter_actors), num_cpus=LIGHT_CPUS)
        .map_batches(MedicalPlausibility, batch_size=None, batch_format="numpy",
                     fn_constructor_kwargs={"medical_uri": models.medical, "min_confidence": cfg.min_confidence,
                                            "settings": settings},
                     compute=ray.data.ActorPoolStrategy(size=cfg.filter_actors), num_cpus=LIGHT_CPUS)
        .map_batches(write_parts, batch_format="numpy", batch_size=None, num_cpus=LIGHT_CPUS,
                     fn_kwargs={"output_uri": output_uri, "settings": settings})
    )
