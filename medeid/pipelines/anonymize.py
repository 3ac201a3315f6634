"""The archive job on Ray Data: list, skip what is done, anonymize in an actor pool, account.

    run = anonymize_archive(input_uri, output_uri, model_uri, detector_uri, secret)   # -> ArchiveRun

- Listing: every file under the input prefix, recursively. Inputs whose key (and size) the manifest
  already holds as finished are `skipped`: a re-run writes nothing twice.
- `AnonymizeFiles` (an actor: the model and detector load once): per batch, each file is read,
  hashed and anonymized (`medeid.archive.anonymize`), its seals put in the recovery store
  (`separate` mode, the default: `<output>-recovery/`), its output written under the same key, a
  quarantined input copied untouched under the quarantine prefix, and then the batch's manifest
  rows are written as one Parquet part named after the batch's keys, so a retried batch rewrites
  the same part: a killed actor costs a retry, never a duplicate row. A file finished in another
  recovery mode than the run's is done again, so the shared copy holds what the run was asked for.
- The end: the run's rows against its listing, `inputs = anonymized + no-face + quarantined +
  skipped`, printed and checked, and the run's report with a before/after grid
  (`medeid.archive.report`) written beside the output.

The secret travels to the actors as a `Secret`, which prints `Secret(***)`; no row, log line or
manifest column holds it or any password.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import time
from dataclasses import dataclass

import numpy as np
import ray

from medeid import storage
from medeid.archive.anonymize import FileAnonymizer
from medeid.archive.manifest import (
    ANONYMIZED,
    FINISHED,
    QUARANTINED,
    SKIPPED,
    Entry,
    Reconciliation,
    latest,
    read_manifest,
    reconcile,
    write_part,
)
from medeid.archive.recovery import EMBEDDED, NONE, SEPARATE, RecoveryStore, check_mode
from medeid.archive.report import write_report
from medeid.codecs import sha256
from medeid.config import HEAD_SURROUND
from medeid.models.folder import WEIGHTS_FILE
from medeid.passwords import Secret, image_password

SECRET_VARIABLE = "MEDEID_ARCHIVE_SECRET"  # where the jobs look when no secret file is given
# Beside the output prefix, on the hospital's side: only the output itself is shared.
MANIFEST_SUFFIX, QUARANTINE_SUFFIX, REPORT_SUFFIX = "-manifest", "-quarantine", "-report"
RECOVERY_SUFFIX = "-recovery"
PROGRESS_EVERY_S = 2.0


@dataclass(frozen=True)
class ArchiveLayout:
    """Where a run reads and writes: outputs under `output`; the manifest, quarantine, reports and
    recovery store beside it."""

    input: str
    output: str
    manifest: str
    quarantine: str
    report: str
    recovery: str

    @classmethod
    def beside(cls, input_uri: str, output_uri: str) -> "ArchiveLayout":
        base = output_uri.rstrip("/")
        return cls(input_uri.rstrip("/"), base, base + MANIFEST_SUFFIX, base + QUARANTINE_SUFFIX, base + REPORT_SUFFIX,
                   base + RECOVERY_SUFFIX)

    @classmethod
    def of_manifest(cls, manifest_uri: str, anonymized_uri: str | None = None,
                    recovery_uri: str | None = None) -> "ArchiveLayout":
        """The layout a finished run left, from its manifest prefix (recovery needs no input)."""
        manifest = manifest_uri.rstrip("/")
        if anonymized_uri is None:
            if not manifest.endswith(MANIFEST_SUFFIX):
                raise ValueError(f"name the anonymized copy: {manifest} does not end in {MANIFEST_SUFFIX}")
            anonymized_uri = manifest[:-len(MANIFEST_SUFFIX)]
        base = anonymized_uri.rstrip("/")
        return cls("", base, manifest, base + QUARANTINE_SUFFIX, base + REPORT_SUFFIX,
                   (recovery_uri or base + RECOVERY_SUFFIX).rstrip("/"))


@dataclass(frozen=True)
class ArchiveRun:
    """What a run did: its reconciliation, how fast, the anonymizing actors' peak memory, its report."""

    summary: Reconciliation
    seconds: float
    processed: int  # files read and anonymized or quarantined (not skipped)
    actor_peak_mib: float  # the largest resident set of any anonymizing actor (0 if none ran)
    report: str

    @property
    def files_per_s(self) -> float:
        return self.processed / max(self.seconds, 1e-9)


def peak_rss_mib() -> float:
    """This process's peak resident memory so far."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def archive_secret(secret_file: str | None) -> Secret:
    """The archive secret from `secret_file`, else from $MEDEID_ARCHIVE_SECRET, which is then removed
    from the environment so nothing this process starts inherits it."""
    secret = Secret.from_file(secret_file) if secret_file else Secret.from_env(SECRET_VARIABLE)
    os.environ.pop(SECRET_VARIABLE, None)
    return secret


class AnonymizeFiles:
    """Ray Data actor: batches of (key, size) rows in, one status row per file out."""

    def __init__(self, layout: ArchiveLayout, model_uri: str, detector_uri: str, secret: Secret, run_id: str,
                 settings: storage.S3Settings | None = None, pass_faceless: bool = False, threads: int = 1,
                 device: str = "cpu", recovery: str = SEPARATE, surround: float = HEAD_SURROUND):
        import torch

        torch.set_num_threads(threads)
        self.layout, self.run_id, self.settings = layout, run_id, settings
        self.store = RecoveryStore(layout.recovery, settings)
        self.anonymizer = FileAnonymizer.from_uris(model_uri, detector_uri, secret, settings, device=device,
                                                   pass_faceless=pass_faceless, recovery=recovery,
                                                   surround=surround)
        self.model_version = self.anonymizer.model.version
        self.model_sha256 = sha256((storage.local_copy(model_uri, settings) / WEIGHTS_FILE).read_bytes())

    def __call__(self, batch: dict) -> dict:
        entries = [self._one(str(key), int(size)) for key, size in zip(batch["key"], batch["size"])]
        part = hashlib.sha256("\n".join(e.input_key for e in entries).encode()).hexdigest()[:24]
        write_part(entries, self.layout.manifest, self.run_id, part, self.settings)
        return {"key": np.array([e.input_key for e in entries], dtype=object),
                "status": np.array([e.status for e in entries], dtype=object),
                "faces": np.array([e.faces for e in entries], dtype=np.int32),
                "peak_rss_mib": np.full(len(entries), peak_rss_mib())}

    def _one(self, key: str, size: int) -> Entry:
        data = storage.read_bytes(storage.join(self.layout.input, key), self.settings)
        outcome = self.anonymizer(key, data)
        entry = Entry(self.run_id, key, len(data), outcome.status, sha256(data), outcome.reason, faces=outcome.faces,
                      recovery=outcome.recovery, model_version=self.model_version, model_sha256=self.model_sha256)
        if outcome.status == QUARANTINED:  # the input itself, untouched, for a person to look at
            storage.write_bytes(storage.join(self.layout.quarantine, key), data, self.settings)
            return entry
        entry.output_key, entry.output_sha256 = key, sha256(outcome.output)
        if outcome.seals:  # before the output: a shared file never exists without its recovery data
            self.store.put(key, entry.output_sha256, list(outcome.seals))
        storage.write_bytes(storage.join(self.layout.output, key), outcome.output, self.settings)
        return entry


def finished_in(row: dict, recovery: str) -> bool:
    """Whether a finished row stands for a run in `recovery` mode: a quarantined file has no output,
    so any mode's; rows from before the mode was recorded were written `embedded`."""
    return row["status"] == QUARANTINED or (row["recovery"] or EMBEDDED) == recovery


def plan(layout: ArchiveLayout, settings: storage.S3Settings | None = None, recovery: str = SEPARATE
         ) -> tuple[list[tuple[str, int]], list[tuple[str, int]], dict[str, str]]:
    """(the listing, what is left to do, and for each finished key the run that finished it)."""
    listed = storage.list_sized(layout.input, settings)
    done = {row["input_key"]: row for row in latest(read_manifest(layout.manifest, settings)).to_pylist()
            if row["status"] in FINISHED}
    todo = [(k, s) for k, s in listed
            if k not in done or done[k]["input_size"] != s or not finished_in(done[k], recovery)]
    left = set(todo)
    return listed, todo, {k: done[k]["run_id"] for k, s in listed if (k, s) not in left}


def anonymize_archive(input_uri: str, output_uri: str, model_uri: str, detector_uri: str, secret: Secret, *,
                      run_id: str | None = None, settings: storage.S3Settings | None = None,
                      pass_faceless: bool = False, actors: int = 2, batch_size: int = 32,
                      report_samples: int = 8, gpus_per_actor: float = 0.0,
                      actor_resources: dict[str, float] | None = None, recovery: str = SEPARATE,
                      surround: float = HEAD_SURROUND) -> ArchiveRun:
    """Anonymize every file under `input_uri` into `output_uri` (same keys); returns the run's
    reconciliation (in an `ArchiveRun`), which balances or this raises. The run's report
    (`medeid.archive.report`, with a grid of `report_samples` before/after pairs) goes to
    `<output>-report/run=<id>/`. `recovery` says
    where the seals go (`medeid.archive.recovery`): the default, `separate`, to `<output>-recovery/`.
    `surround` > 0 blurs the head around each face too (`MedSemDeID.deidentify_faces`)."""
    layout = ArchiveLayout.beside(input_uri, output_uri)
    check_mode(recovery)
    run_id = run_id or dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    listed, todo, finished_by = plan(layout, settings, recovery)
    if finished_by:
        write_part([Entry(run_id, key, size, SKIPPED, reason=f"finished by run {finished_by[key]}")
                    for key, size in listed if key in finished_by], layout.manifest, run_id, "skipped", settings)
    print(f"[anonymize] run {run_id}: {len(listed)} inputs, {len(finished_by)} already done, {len(todo)} to do; "
          f"recovery data: {recovery}" + (f" (in {layout.recovery})" if recovery == SEPARATE else ""), flush=True)
    started, seen, counts, shown, peak = time.monotonic(), 0, {}, 0.0, 0.0
    if todo:
        files = ray.data.from_items([{"key": k, "size": s} for k, s in todo])
        results = files.map_batches(
            AnonymizeFiles, batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=actors),
            num_gpus=gpus_per_actor or None, resources=actor_resources,
            fn_constructor_kwargs={"layout": layout, "model_uri": model_uri, "detector_uri": detector_uri,
                                   "secret": secret, "run_id": run_id, "settings": settings,
                                   "pass_faceless": pass_faceless, "device": "cuda" if gpus_per_actor else "cpu",
                                   "recovery": recovery, "surround": surround})
        for batch in results.iter_batches(batch_size=None, batch_format="numpy"):
            seen += len(batch["key"])
            peak = max(peak, float(batch["peak_rss_mib"].max()))
            for status in batch["status"]:
                counts[status] = counts.get(status, 0) + 1
            elapsed = time.monotonic() - started
            if elapsed - shown >= PROGRESS_EVERY_S or seen == len(todo):
                shown = elapsed
                print(f"[anonymize] {seen}/{len(todo)} files ({seen / max(elapsed, 1e-9):.1f} files/s, actor "
                      f"peak {peak:.0f} MiB) {counts}", flush=True)
    seconds = time.monotonic() - started
    run_rows = read_manifest(layout.manifest, settings, run_id=run_id)
    summary = reconcile([k for k, _ in listed], run_rows)
    report = write_report(layout, run_id, summary, run_rows, seconds, settings, samples=report_samples)
    print(f"[anonymize] {summary} ({seconds:.0f} s); report: {report}", flush=True)
    return ArchiveRun(summary, seconds, len(todo), peak, report)


WRITTEN_WITH_NONE = ("not restored: written with recovery mode 'none', so nothing that could restore its faces "
                     "was kept (irreversible by design)")


def recover_photos(layout: ArchiveLayout, keys: list[str], restore_uri: str, model_uri: str, secret: Secret,
                   settings: storage.S3Settings | None = None) -> dict[str, str]:
    """Restore chosen anonymized photos into `restore_uri` (same keys): key -> status. Each file's
    seals come from where the manifest says its run kept them: the file itself (`embedded`) or the
    recovery store (`separate`); a file written with `none`, or one the manifest does not hold as
    anonymized, gets the reason instead. Nothing else is written."""
    from medeid.archive.anonymize import recover_file
    from medeid.models.deid.api import RECOVERED, MedSemDeID

    model = MedSemDeID.from_uri(model_uri, settings)
    store = RecoveryStore(layout.recovery, settings)
    finished = {row["input_key"]: row for row in latest(read_manifest(layout.manifest, settings)).to_pylist()}
    statuses = {}
    for key in keys:
        row = finished.get(key)
        if row is None or row["status"] != ANONYMIZED:
            statuses[key] = f"not restored: the manifest has it as {row['status'] if row else 'never processed'}"
            continue
        if row["recovery"] == NONE:
            statuses[key] = WRITTEN_WITH_NONE
            continue
        data = storage.read_bytes(storage.join(layout.output, row["output_key"]), settings)
        if sha256(data) != row["output_sha256"]:
            statuses[key] = "not restored: the anonymized file changed since the job wrote it"
            continue
        seals = None  # embedded (and rows older than the mode): the file carries them
        if row["recovery"] == SEPARATE:
            seals = store.get(key, row["output_sha256"])
            if seals is None:
                statuses[key] = f"not restored: the recovery store {layout.recovery} holds nothing for this file"
                continue
        restored, status = recover_file(model, image_password(secret, key), data, seals)
        if status == RECOVERED:
            storage.write_bytes(storage.join(restore_uri, key), restored, settings)
        statuses[key] = status
    return statuses
