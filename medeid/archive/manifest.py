"""The archive job's manifest: one Parquet row per input file and run, beside the output.

Layout: `<manifest>/run=<run_id>/part-<n>.parquet`, each part written whole (an S3 put is atomic).
A run writes a row for every input it listed, including `skipped` for inputs an earlier run
already finished, so each run's own rows reconcile its listing:

    inputs = anonymized + no_face + quarantined + skipped

`latest` gives each input's finished row (the run that processed it): exactly one per file, which
is what a re-run consults to skip, and what `jobs/recover.py` reads to find a photo's output.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from medeid import storage
from medeid.schema import ARCHIVE_MANIFEST

ANONYMIZED, NO_FACE, QUARANTINED, SKIPPED = "anonymized", "no_face", "quarantined", "skipped"
STATUSES = (ANONYMIZED, NO_FACE, QUARANTINED, SKIPPED)
FINISHED = (ANONYMIZED, NO_FACE, QUARANTINED)  # a re-run leaves these alone


@dataclass
class Entry:
    """One manifest row (`schema.ARCHIVE_MANIFEST`)."""

    run_id: str
    input_key: str
    input_size: int
    status: str
    input_sha256: str | None = None
    reason: str | None = None
    output_key: str | None = None
    output_sha256: str | None = None
    faces: int = 0
    recovery: str | None = None  # embedded | separate | none (`medeid.archive.recovery`)
    model_version: str | None = None
    model_sha256: str | None = None
    processed_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")


def to_table(entries: list[Entry]) -> pa.Table:
    return pa.Table.from_pylist([asdict(e) for e in entries], schema=ARCHIVE_MANIFEST)


def write_part(entries: list[Entry], manifest_uri: str, run_id: str, part: str,
               settings: storage.S3Settings | None = None) -> str:
    """Write `entries` as one whole Parquet part of `run_id`; returns its URI."""
    uri = storage.join(manifest_uri, f"run={run_id}", f"part-{part}.parquet")
    storage.write_table(to_table(entries), uri, settings)
    return uri


def read_manifest(manifest_uri: str, settings: storage.S3Settings | None = None, run_id: str | None = None) -> pa.Table:
    """Every row under the manifest (or one run's); an empty table when there is none yet."""
    root = storage.join(manifest_uri, f"run={run_id}") if run_id else manifest_uri
    return storage.read_tables(root, ARCHIVE_MANIFEST, settings)


def latest(table: pa.Table) -> pa.Table:
    """Each input's finished row: the newest one whose status is not `skipped`."""
    finished = table.filter(pc.is_in(table["status"], pa.array(FINISHED)))
    if not len(finished):
        return finished
    order = finished.sort_by([("input_key", "ascending"), ("processed_at", "descending")])
    keys = order["input_key"].to_pylist()
    first = [i for i, key in enumerate(keys) if i == 0 or keys[i - 1] != key]
    return order.take(first)


@dataclass(frozen=True)
class Reconciliation:
    inputs: int
    counts: dict[str, int]

    @property
    def balanced(self) -> bool:
        return self.inputs == sum(self.counts.values())

    def __str__(self) -> str:
        terms = " + ".join(f"{self.counts.get(s, 0)} {s.replace('_', '-')}" for s in STATUSES)
        return f"inputs {self.inputs} {'=' if self.balanced else '!='} {terms}"


def reconcile(listed: list[str], run_rows: pa.Table) -> Reconciliation:
    """A run's rows against its listing; raises if an input has no row or more than one."""
    keys = run_rows["input_key"].to_pylist()
    missing, extra = set(listed) - set(keys), set(keys) - set(listed)
    duplicated = len(keys) - len(set(keys))
    if missing or extra or duplicated:
        raise RuntimeError(f"manifest does not account for the listing: {len(missing)} inputs without a row, "
                           f"{len(extra)} rows for inputs not listed, {duplicated} inputs with several rows "
                           f"(e.g. {sorted(missing | extra)[:3]})")
    statuses = run_rows["status"].to_pylist()
    return Reconciliation(len(listed), {s: statuses.count(s) for s in STATUSES})
