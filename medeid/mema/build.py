"""The MeMa build's driver: plan the condition rows, stream rounds of attempts until every row is
released or out of attempts, audit with the evaluator and the eye-band attackers, write the dataset
card, reconcile.

Layout under the output root: `statistics.json` (the real cohort's), `conditions/` (the requested
rows), `shards/` (released images, schema MEMA_IMAGE), `rejections/`, `audit/`, `card/`, `run.json`,
and `private/`: embeddings of real patients (the identity indexes) and the eye-band attack audit,
which names real photos (`private/attacks/`); none of it may ship with MeMa.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

import pyarrow as pa
import pyarrow.parquet as pq
import ray
from tqdm import tqdm

from medeid import schema, storage
from medeid.config import Config
from medeid.mema.attack_audit import ATTACKS, audit_released_attacks
from medeid.mema.audit import audit_released
from medeid.mema.eye_filter import generator_resolution, prepare_eye_check
from medeid.mema.face_distance import measure_face_distance
from medeid.mema.sampling import sample_conditions
from medeid.mema.statistics import CohortStatistics, cohort_statistics
from medeid.mema.tstr import TSTR, run_tstr
from medeid.models.identity_index import IdentityIndex
from medeid.pipelines.identity_index import build_identity_index
from medeid.pipelines.mema import (AUDIT, CONDITIONS, REJECTIONS, SHARDS, STAGES, STATISTICS, Models, Progress,
                                   SourcePicker, mema_stream, pending_rows, read_landed)
from medeid.pipelines.synthetic_archive import read_metadata
from medeid.train.data import split_of

PRIVATE = "private"


@dataclass
class MemaResult:
    requested: int
    released: int
    rejected: int  # attempts
    unfilled: int  # requested rows with no released image after max_attempts
    rejected_by_stage: dict
    rounds: int
    seconds: float
    card: str | None = None

    @property
    def sampled(self) -> int:
        return self.released + self.rejected

    @property
    def reconciled(self) -> bool:
        return self.requested == self.released + self.unfilled


def plan(archive_root: str, output_uri: str, cfg: Config, settings=None) -> tuple[CohortStatistics, list[dict]]:
    """The cohort's statistics (kept from an earlier run of the same output, so its rows stay the
    same) and the requested condition rows, written to `conditions/`."""
    stats_uri = storage.join(output_uri, STATISTICS)
    if storage.exists(stats_uri, settings):
        stats = CohortStatistics.load(stats_uri, settings)
    else:
        stats = cohort_statistics(archive_root, settings)
        stats.save(stats_uri, settings)
    rows = sample_conditions(stats, cfg.mema.samples, cfg.mema.seed, cfg.mema.disease_mix)
    table = pa.Table.from_pylist([{**r, "source_key": None} for r in rows], schema=schema.MEMA_CONDITION)
    fs, path = storage.filesystem(storage.join(output_uri, CONDITIONS, "conditions.parquet"), settings)
    if not storage.is_s3(output_uri):
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    pq.write_table(table, path, filesystem=fs)
    return stats, rows


def ensure_index(archive_root: str, pack_uri: str, index_uri: str, settings=None) -> None:
    """Embed the real patients once; a later run reuses the index."""
    if storage.exists(index_uri, settings) and any(f.endswith(".parquet")
                                                   for f in storage.list_files(index_uri, settings)):
        return
    figures = build_identity_index(archive_root, pack_uri, index_uri, settings)
    print(f"[build_mema] identity index of {figures['written']} real photos at {index_uri} "
          f"({figures['quarantined']} quarantined)", flush=True)


def clear_output(output_uri: str, settings=None) -> None:
    fs, path = storage.filesystem(output_uri, settings)
    if storage.exists(output_uri, settings):
        fs.delete_dir_contents(path, missing_dir_ok=True)


def build_mema(archive_root: str, models: Models, output_uri: str, cfg: Config, *, overwrite: bool = False,
               settings: storage.S3Settings | None = None, card: bool = True, versions: dict | None = None) -> MemaResult:
    started = time.monotonic()
    storage.check_reachable(output_uri, settings)
    if overwrite:
        clear_output(output_uri, settings)
    ensure_index(archive_root, models.recognizer, models.index, settings)
    _, conditions = plan(archive_root, output_uri, cfg, settings)
    sources = None
    if cfg.mema.strategy != "txt2img":  # sources from the generator's own patients, never the held-out ones
        metadata = read_metadata(archive_root, settings)
        training = [split_of(p, cfg.generator.held_out) == "train" for p in metadata["patient_id"].to_pylist()]
        sources = SourcePicker(metadata.filter(pa.array(training)))
    index = IdentityIndex.from_uri(models.index, settings)
    index_ref, open_set = index.to_ref(), index.open_set_threshold(cfg.mema.identity_far)
    print(f"[build_mema] full-face filter: {len(index)} real photos indexed; a face is too close above cosine "
          f"{open_set:.3f} (reached by {cfg.mema.identity_far:g} of real photos with their nearest photo of another "
          f"patient) and the recogniser's match threshold, less a margin of {cfg.mema.identity_margin:g}", flush=True)
    eye_ref = None
    if not cfg.mema.eye_filter:
        print("[build_mema] eye-band filter off in the config: only the full-face recogniser filters identity",
              flush=True)
    else:
        eye = prepare_eye_check(archive_root, generator_resolution(models.generator, settings), settings,
                                far=cfg.mema.eye_filter_far, log=None)
        eye_ref = ray.put(eye)
        print(f"[build_mema] eye-band filter: a periocular recogniser of its own on {eye.figures['photos']} real "
              f"photos (top-1 {eye.figures['top1_others']:.1%} from a patient's other photos), rejecting at cosine "
              f"{eye.threshold:.3f} (FAR {eye.figures['far']:g}) and pixel copies under {eye.copy_distance:g}",
              flush=True)

    rounds = 0
    for rounds in range(1, cfg.mema.max_attempts + 1):
        progress = Progress.read(output_uri, settings)
        rows = pending_rows(conditions, progress, cfg.mema, sources)
        if not rows:
            rounds -= 1
            break
        with tqdm(total=len(rows), desc=f"[build_mema] round {rounds}: attempts", unit="img", mininterval=5) as bar:
            released = 0
            for counts in mema_stream(rows, models, index_ref, cfg.mema, cfg.generator.prompt_template, output_uri,
                                      archive_root, settings, eye_ref, open_set).iter_rows():
                released += counts["released"]
                bar.update(counts["released"] + counts["rejected"])
                bar.set_postfix(released=released, refresh=False)

    progress = Progress.read(output_uri, settings)
    rejected = read_landed(output_uri, REJECTIONS, ["stage"], settings)["stage"].to_pylist()
    by_stage = {stage: rejected.count(stage) for stage in STAGES}
    result = MemaResult(requested=len(conditions), released=len(progress.released), rejected=len(rejected),
                        unfilled=sum(1 for r in conditions if r["sample_id"] not in progress.released),
                        rejected_by_stage=by_stage, rounds=rounds, seconds=0.0)
    if models.evaluator and result.released:
        evaluator_index = models.evaluator_index or storage.join(output_uri, PRIVATE, "evaluator_index")
        ensure_index(archive_root, models.evaluator, evaluator_index, settings)
        audit_released(storage.join(output_uri, SHARDS), models.evaluator, evaluator_index,
                       storage.join(output_uri, AUDIT), settings)
        if result.released >= 2:
            distance = measure_face_distance(storage.join(output_uri, SHARDS), models.evaluator, evaluator_index,
                                             output_uri, settings)
            print(f"[build_mema] face distance to the real photos {distance['mema_to_real']:.3f} vs "
                  f"{distance['real_to_real']:.3f} between two halves of the real patients "
                  f"(ratio {distance['ratio']:.2f})", flush=True)
    if result.released and not cfg.mema.audit_attacks:
        print("[build_mema] attack audit off in the config: the card's eye-band bars FAIL as not run", flush=True)
    elif result.released:
        found = audit_released_attacks(storage.join(output_uri, SHARDS), archive_root,
                                       storage.join(output_uri, ATTACKS), settings)
        print(f"[build_mema] attack audit of {found['released']} released images: {found['periocular_matches']} "
              f"periocular matches (threshold {found['threshold']:.3f}), {found['pixel_copies']} pixel copies "
              f"({found['seconds']} s)", flush=True)
    if result.released and not cfg.mema.tstr:
        print("[build_mema] train-on-MeMa test off in the config: the card's TSTR bars FAIL as not run", flush=True)
    elif result.released:
        tstr = run_tstr(storage.join(output_uri, SHARDS), archive_root, models.medical, storage.join(output_uri, TSTR),
                        settings)
        if tstr:
            disease, dice = tstr["figures"]["disease_accuracy"], tstr["figures"]["tumour_dice"]
            print(f"[build_mema] train on MeMa ({tstr['mema_images']} images, {tstr['epochs']} epochs), test on real: "
                  f"disease accuracy {disease['mema']:.3f} vs {disease['real']:.3f} trained on real "
                  f"(ratio {_ratio(disease)}), lesion Dice {_ratio(dice, 'mema')} vs {_ratio(dice, 'real')} "
                  f"(ratio {_ratio(dice)})", flush=True)
    result.seconds = round(time.monotonic() - started, 1)
    if card:
        from medeid.mema.card import write_card

        result.card = write_card(output_uri, config=cfg.to_dict(), versions=versions or package_versions(),
                                 settings=settings)
    run = {**asdict(result), "sampled": result.sampled, "reconciled": result.reconciled, "models": asdict(models),
           "archive": archive_root, "config": cfg.to_dict()}
    storage.write_bytes(storage.join(output_uri, "run.json"), json.dumps(run, indent=1).encode(), settings)
    return result


def _ratio(row: dict, key: str = "ratio") -> str:
    value = row[key]
    return "n/a" if value is None or value != value else f"{value:.3f}"


def package_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    names = ("medeid", "ray", "torch", "diffusers", "transformers", "peft", "insightface", "onnxruntime", "pyarrow")
    found = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found
