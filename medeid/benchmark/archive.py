"""The archive job: files/s and peak memory at 1x and 10x, local folder and S3 server."""

from __future__ import annotations

import os
import tracemalloc
from dataclasses import replace

from medeid import storage
from medeid.benchmark.common import timed
from medeid.benchmark.models import deid_model, detector_pack


def suite_anonymize(files: int = 96, scale: int = 10, actors: int = 2, size: int = 256) -> list[tuple]:
    """The archive job end to end, on the local S3 server and on a local folder: an archive of
    `files` photos in every form and one `scale` times larger, against the same stage
    (`AnonymizeFiles`: read, detect, replace, write, manifest part) in a bare Python loop on one
    thread. The marginal throughput is the larger run's extra files over its extra time (start-up
    taken out). On two cores the S3 server is a third process wanting CPU: the folder shows the
    job's own scaling. Peak memory of the anonymizing actors and of the driver: a streaming job
    stays flat as the archive grows."""
    import tempfile

    import ray

    from medeid.devstack import LocalS3
    from medeid.passwords import Secret
    from medeid.pipelines.anonymize import AnonymizeFiles, ArchiveLayout, anonymize_archive
    from medeid.synth.hospital_files import hospital_files, write_files

    photos = hospital_files(files, seed=5, size=size)[:files]  # faces only: the trouble files are cheap
    secret = Secret("benchmark secret")
    table = [("archive", files, "files", f"{size} px photos: JPEG, PNG, grey, CMYK, TIFF, 16-bit, DICOM; "
                                         f"{actors} actors")]
    with tempfile.TemporaryDirectory() as directory, LocalS3() as s3:
        model, detector = deid_model(directory, 128), detector_pack(directory)
        started_here = not ray.is_initialized()
        if started_here:
            ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": s3.env})
        try:
            for store, settings in (("local folder", None), ("local S3 server", s3.settings)):
                runs = {}
                roots = {times: f"s3://bench-{times}x" if settings else f"{directory}/bench-{times}x"
                         for times in (1, scale)}
                for times, root in roots.items():
                    if settings:
                        storage.make_bucket(root, settings)
                    write_files([replace(p, key=f"copy{c:03d}/{p.key}") for c in range(times) for p in photos],
                                f"{root}/in", settings)
                    tracemalloc.start()
                    run = anonymize_archive(f"{root}/in", f"{root}/out", model, detector, secret,
                                            settings=settings, actors=actors, report_samples=0)
                    runs[times] = (run, tracemalloc.get_traced_memory()[1] / 2**20)
                    tracemalloc.stop()
                    assert run.summary.balanced, run.summary
                layout = ArchiveLayout.beside(f"{roots[1]}/in", f"{roots[1]}/bare")
                stage = AnonymizeFiles(layout, model, detector, secret, "bare", settings)
                listing = storage.list_sized(layout.input, settings)

                def bare_loop():
                    for start in range(0, len(listing), 8):
                        chunk = listing[start:start + 8]
                        stage({"key": [k for k, _ in chunk], "size": [n for _, n in chunk]})

                table += _anonymize_rows(store, runs, timed(bare_loop, 1), files, scale, actors)
        finally:
            if started_here:
                ray.shutdown()
    return table


def _anonymize_rows(store: str, runs: dict, bare_s: float, files: int, scale: int, actors: int) -> list[tuple]:
    (small, small_driver), (large, large_driver) = runs[1], runs[scale]
    marginal = (scale - 1) * files / (large.seconds - small.seconds)
    bare = files / bare_s
    return [
        (f"{store}: 1x ({files} files)", small.files_per_s, "files/s", "end to end: listing, actors' start-up, report"),
        (f"{store}: anonymized, 1x", small.summary.counts["anonymized"], "files", "the rest quarantined"),
        (f"{store}: {scale}x ({scale * files} files)", large.files_per_s, "files/s", "end to end"),
        (f"{store}: bare Python loop, one thread", bare, "files/s", "the same stage, in process"),
        (f"{store}: Ray Data, {actors} actors, marginal", marginal, "files/s",
         f"the {scale}x run's extra {(scale - 1) * files} files over its extra time"),
        (f"{store}: {actors} actors / bare loop", marginal / bare, "x",
         "marginal; DESIGN bar: >= 1.7 with 2 actors on 2 cores"),
        (f"{store}: actor peak memory, 1x", small.actor_peak_mib, "MiB", "max over actors (RSS)"),
        (f"{store}: actor peak memory, {scale}x", large.actor_peak_mib, "MiB",
         f"ratio {large.actor_peak_mib / small.actor_peak_mib:.2f}; DESIGN bar: <= 1.2"),
        (f"{store}: driver peak Python memory, 1x", small_driver, "MiB", "listing, progress, manifest, reconciliation"),
        (f"{store}: driver peak Python memory, {scale}x", large_driver, "MiB",
         f"ratio {large_driver / max(small_driver, 1e-9):.2f}"),
    ]
