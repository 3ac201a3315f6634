"""The archive job's report: what a run did, in a Markdown page with a before/after grid.

    uri = write_report(layout, run_id, summary, run_rows, seconds, settings)

Written to `<output>-report/run=<id>/` (`report.md`, `before-after.png`). The grid shows original
faces, so the report belongs on the hospital's side with the quarantine and the manifest, never in
the anonymized copy that is shared.
"""

from __future__ import annotations

import io
from collections import Counter

import numpy as np
import pyarrow as pa
from PIL import Image, ImageOps

from medeid import storage
from medeid.archive.anonymize import Decoded
from medeid.archive.formats import Rejected
from medeid.archive.manifest import ANONYMIZED, QUARANTINED, STATUSES, Reconciliation

GRID_FILE, REPORT_FILE = "before-after.png", "report.md"
THUMBNAIL = 128


def sample_keys(run_rows: pa.Table, samples: int) -> list[str]:
    """Up to `samples` anonymized keys, spread evenly over the sorted keys (so over folders and formats)."""
    keys = sorted(r["input_key"] for r in run_rows.to_pylist() if r["status"] == ANONYMIZED)
    if len(keys) <= samples:
        return keys
    return [keys[int(i)] for i in np.linspace(0, len(keys) - 1, samples).round()]


def thumbnail(data: bytes) -> np.ndarray:
    """A file's pixels (orientation applied) fitted into a square, for the grid."""
    image = Image.fromarray(Decoded.of(data).rgb)
    return np.asarray(ImageOps.pad(image, (THUMBNAIL, THUMBNAIL), color=(255, 255, 255)))


def before_after_grid(pairs: list[tuple[str, bytes, bytes]]) -> Image.Image:
    """Rows of (key, input, output): the original and the anonymized photo side by side."""
    from medeid.synth.contact_sheet import image_grid

    images, labels = [], []
    for key, before, after in pairs:
        try:
            images.append([thumbnail(before), thumbnail(after)])
        except Rejected:  # the input changed since the run read it: leave it out of the picture
            continue
        labels.append(key if len(key) <= 36 else "…" + key[-35:])
    return image_grid(images, labels, ["input", "anonymized"])


def quarantine_reasons(run_rows: pa.Table) -> list[tuple[str, int, str]]:
    """(reason, files, an example key) for the run's quarantined files, the reason up to its detail."""
    kinds = sorted(((r["reason"] or "").split(":")[0], r["input_key"]) for r in run_rows.to_pylist()
                   if r["status"] == QUARANTINED)
    counts, example = Counter(kind for kind, _ in kinds), {}
    for kind, key in kinds:
        example.setdefault(kind, key)  # the first key in order
    return [(kind, n, example[kind]) for kind, n in counts.most_common()]


RECOVERY_MEANS = {"embedded": "each shared file carries its faces' sealed originals (pseudonymized)",
                  "separate": "the sealed originals are in the hospital's private store, none in the shared files",
                  "none": "nothing that could restore the faces was kept (irreversible)"}


def recovery_lines(layout, run_rows: pa.Table) -> list[str]:
    """Which recovery mode the run's written files were made in (`medeid.archive.recovery`)."""
    if "recovery" not in run_rows.column_names:
        return []
    modes = Counter(m for m in run_rows.column("recovery").to_pylist() if m)
    return [f"- recovery data, {n} file{'s' * (n != 1)}: **{mode}**: {RECOVERY_MEANS.get(mode, mode)}"
            + (f" (`{layout.recovery}`)" if mode == "separate" else "") for mode, n in sorted(modes.items())]


def write_report(layout, run_id: str, summary: Reconciliation, run_rows: pa.Table, seconds: float,
                 settings: storage.S3Settings | None = None, samples: int = 8) -> str:
    """Write the run's report and grid under `layout.report`; returns the report's URI."""
    root = storage.join(layout.report, f"run={run_id}")
    processed = sum(n for status, n in summary.counts.items() if status != "skipped")
    models = sorted({(r["model_version"], r["model_sha256"]) for r in run_rows.to_pylist() if r["model_version"]})
    lines = [f"# Archive anonymization, run {run_id}", "",
             f"- input: `{layout.input}`", f"- output: `{layout.output}`",
             f"- manifest: `{layout.manifest}`, quarantine: `{layout.quarantine}`",
             f"- **{summary}**: {'balanced' if summary.balanced else 'NOT BALANCED'}",
             f"- {processed} files processed in {seconds:.0f} s ({processed / max(seconds, 1e-9):.1f} files/s)",
             *[f"- MedSem-DeID {version} (weights sha256 `{digest}`)" for version, digest in models],
             *recovery_lines(layout, run_rows), "",
             "| status | files |", "| --- | ---: |",
             *[f"| {status} | {summary.counts.get(status, 0)} |" for status in STATUSES], ""]
    reasons = quarantine_reasons(run_rows)
    if reasons:
        lines += ["## Quarantined", "", "| reason | files | for example |", "| --- | ---: | --- |",
                  *[f"| {reason} | {n} | `{key}` |" for reason, n, key in reasons], ""]
    keys = sample_keys(run_rows, samples)
    if keys:
        pairs = [(k, storage.read_bytes(storage.join(layout.input, k), settings),
                  storage.read_bytes(storage.join(layout.output, k), settings)) for k in keys]
        buffer = io.BytesIO()
        before_after_grid(pairs).save(buffer, format="PNG")
        storage.write_bytes(storage.join(root, GRID_FILE), buffer.getvalue(), settings)
        lines += ["## Before and after", "",
                  f"{len(keys)} anonymized files, spread over the archive. The inputs are patients' photos: "
                  "this report stays with the quarantine, on the hospital's side.", "",
                  f"![before and after]({GRID_FILE})", ""]
    uri = storage.join(root, REPORT_FILE)
    storage.write_bytes(uri, "\n".join(lines).encode(), settings)
    return uri
