"""MedSem-DeID over photos: the Ray Data stage vs a bare loop."""

from __future__ import annotations

import os
import time

import numpy as np

from medeid.benchmark.common import timed
from medeid.benchmark.models import deid_model


def suite_deid(photos: int = 128, sizes: tuple[int, ...] = (128, 256), batch_size: int = 16) -> list[tuple]:
    """MedSem-DeID (network, paste back, sealed recovery data) through Ray Data with one and two actors,
    against the same stage in a bare Python loop; marginal throughput as in `suite_mema`, and each
    actor's peak memory over `photos` and over twice as many (a streaming stage stays flat)."""
    import tempfile

    import ray
    import torch

    from medeid.models.deid.donors import synthetic_donors
    from medeid.passwords import Secret
    from medeid.pipelines.anonymize import peak_rss_mib
    from medeid.pipelines.deid import DeidentifyPhotos

    class MeasuredDeidentify(DeidentifyPhotos):
        def __call__(self, batch: dict) -> dict:
            out = super().__call__(batch)
            return {"rss_mib": np.full(len(out["key"]), peak_rss_mib())}

    secret = Secret("benchmark secret")
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    table = []
    with tempfile.TemporaryDirectory() as directory:
        for size in sizes:
            uri = deid_model(directory, size)
            faces = synthetic_donors(32, size, seed=1)
            items = [{"image": faces[i % len(faces)], "key": f"photos/{i:06d}.png"} for i in range(2 * photos)]
            stage = DeidentifyPhotos(uri, secret)

            def bare_loop():
                for start in range(0, photos, batch_size):
                    chunk = items[start:start + batch_size]
                    stage({"image": np.stack([r["image"] for r in chunk]), "key": np.array([r["key"] for r in chunk])})

            threads = torch.get_num_threads()
            all_cores_s = timed(bare_loop, 1)
            torch.set_num_threads(1)
            try:
                bare_s = timed(bare_loop, 1)
            finally:
                torch.set_num_threads(threads)
            marginal, peaks = {}, {}
            for actors in (1, 2):
                def stream(n: int):
                    out = (ray.data.from_items(items[:n], override_num_blocks=max(1, n // batch_size))
                           .map_batches(MeasuredDeidentify, batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=1,
                                        fn_constructor_kwargs={"model_uri": uri, "secret": secret, "threads": 1})
                           .take_all())
                    return max(r["rss_mib"] for r in out)

                started = time.perf_counter()
                peaks[(actors, 1)] = stream(photos)
                once = time.perf_counter() - started
                started = time.perf_counter()
                peaks[(actors, 2)] = stream(2 * photos)
                marginal[actors] = time.perf_counter() - started - once
            bare = photos / bare_s
            table += [
                (f"{size} px: bare Python loop, one thread", bare, "images/s", f"batch {batch_size}, CPU"),
                (f"{size} px: bare Python loop, every core", photos / all_cores_s, "images/s", f"torch on {threads} threads"),
                *[(f"{size} px: Ray Data, {a} actor{'s' * (a > 1)}, marginal", photos / marginal[a], "images/s",
                   f"the second {photos} photos of a run over {2 * photos}") for a in (1, 2)],
                (f"{size} px: 1 actor / bare loop", bare_s / marginal[1], "x", "DESIGN bar: >= 0.9"),
                (f"{size} px: 2 actors / bare loop", bare_s / marginal[2], "x", "DESIGN bar: >= 1.7 on 2 cores"),
                (f"{size} px: actor peak memory, {photos} photos", peaks[(2, 1)], "MiB", "max over actors (RSS)"),
                (f"{size} px: actor peak memory, {2 * photos} photos", peaks[(2, 2)], "MiB",
                 f"ratio {peaks[(2, 2)] / peaks[(2, 1)]:.2f}; DESIGN bar: <= 1.2"),
            ]
    if started_here:
        ray.shutdown()
    return table
