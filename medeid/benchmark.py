"""Benchmark suites: figures as ratios against a baseline measured in the same run.

Each suite returns rows of (measure, value, unit, note); `jobs/benchmark.py` prints them as a
Markdown table with the machine's description.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import time
import tracemalloc

from dataclasses import replace

import numpy as np

from medeid import storage
from medeid.models.identity_index import IdentityIndex


def machine() -> str:
    """One line: CPU model and cores, memory, GPU if any, and the versions the figures depend on."""
    import ray
    import torch

    cpu = platform.machine()
    with contextlib.suppress(OSError):
        names = [line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")]
        cpu = names[0] if names else cpu
    memory = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        total_kib = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal"))
        memory = f", {total_kib / 2**20:.0f} GiB"
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} cores{memory}, {gpu}; Python {platform.python_version()}, "
            f"Ray {ray.__version__}, torch {torch.__version__}")


def _timed(fn, repeats: int) -> float:
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - started) / repeats


def _peak_bytes(fn) -> int:
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def suite_index(rows: int = 1_000_000, dim: int = 512, batch: int = 64, chunk_rows: int = 65536,
                repeats: int = 3, seed: int = 0) -> list[tuple]:
    """The identity filter's query against an index of `rows` embeddings, chunked vs one full product."""
    rng = np.random.default_rng(seed)
    vectors = np.empty((rows, dim), np.float16)
    for start in range(0, rows, chunk_rows):  # built in chunks, so the float32 draw never exists whole
        part = rng.standard_normal((min(chunk_rows, rows - start), dim), dtype=np.float32)
        vectors[start:start + len(part)] = part / np.linalg.norm(part, axis=1, keepdims=True)
    index = IdentityIndex(vectors, [f"P{i}" for i in range(rows)], [f"k{i}" for i in range(rows)],
                          chunk_rows=chunk_rows)
    queries = rng.standard_normal((batch, dim), dtype=np.float32)

    def full_product():  # the baseline: one (batch, rows) float32 product over a float32 copy
        return (queries @ vectors.astype(np.float32).T).max(axis=1)

    chunked_s, full_s = _timed(lambda: index.max_similarity(queries), repeats), _timed(full_product, 1)
    chunked_peak, full_peak = _peak_bytes(lambda: index.max_similarity(queries)), _peak_bytes(full_product)
    return [
        ("index rows", rows, "embeddings", f"{dim}-d float16, {vectors.nbytes / 2**30:.2f} GiB"),
        ("chunked query", batch / chunked_s, "faces/s", f"batch {batch}, chunks of {chunk_rows} rows"),
        ("full-product baseline", batch / full_s, "faces/s", "float32 copy of the index, one product"),
        ("chunked / baseline throughput", full_s / chunked_s, "x", ""),
        ("chunked peak extra memory", chunked_peak / 2**20, "MiB", "one chunk and its product"),
        ("baseline peak extra memory", full_peak / 2**20, "MiB", ""),
    ]


def _mema_models(directory, resolution: int, index_rows: int, seed: int = 0):
    """Untrained models of the real classes (speed does not depend on training) and a random index."""
    import torch

    from medeid.models.export import export_recognizer_pack
    from medeid.models.generator import TinyGeneratorConfig, build_tiny_pipeline
    from medeid.models.medical import MedicalNet
    from medeid.models.recognizer import Recognizer
    from medeid.pipelines.mema import Models

    torch.manual_seed(seed)
    export_recognizer_pack(Recognizer("resnet"), f"{directory}/recognizer", {"match_threshold": 0.99})
    MedicalNet().save(f"{directory}/medical")
    build_tiny_pipeline(TinyGeneratorConfig(resolution=resolution), seed=seed).save_pretrained(f"{directory}/generator")
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((index_rows, 512), dtype=np.float32)
    index = IdentityIndex((vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float16),
                          [f"P{i}" for i in range(index_rows)], [f"k{i}" for i in range(index_rows)])
    return Models(generator=f"{directory}/generator", recognizer=f"{directory}/recognizer",
                  medical=f"{directory}/medical", index=""), index


def suite_mema(samples: int = 256, batch_size: int = 16, steps: int = 10, resolution: int = 64,
               index_rows: int = 4800) -> list[tuple]:
    """build_mema's stages (generate, quality, identity, plausibility, write) through Ray Data with one
    and with two generator actors, against the same stage objects in a bare Python loop.

    Each stream runs over `samples` rows and over twice as many: the difference is the marginal
    throughput, with the actors' start-up (process, imports, model loading) taken out; the end-to-end
    figure keeps it in.
    """
    import tempfile
    from dataclasses import asdict, replace

    import ray
    import torch

    from medeid.config import MemaConfig
    from medeid.pipelines.mema import (GenerateFaces, IdentityFilter, MedicalPlausibility, Progress, face_quality,
                                       mema_stream, pending_rows, write_parts)

    template = "a clinical photo of a {sex} patient aged {age_band} with {condition}"
    cfg = MemaConfig(samples=samples, steps=steps, batch_size=batch_size, min_sharpness=0, min_contrast=0,
                     max_attempts=1, strategy="txt2img")
    conditions = [{"sample_id": f"bench-{i:06d}", "seed": i, "age": 20 + i % 60, "sex": ("female", "male")[i % 2],
                   "disease": "ptosis", "laterality": "left", "severity": 2, "findings": ["moderate", "upper lid droop"]}
                  for i in range(2 * samples)]
    rows = pending_rows(conditions, Progress(), cfg, None)
    with tempfile.TemporaryDirectory() as directory:
        models, index = _mema_models(directory, resolution, index_rows)
        parts = {"embeddings": index.embeddings, "patient_ids": index.patient_ids, "photo_keys": index.photo_keys,
                 "model": None, "chunk_rows": index.chunk_rows}
        stages = [GenerateFaces(models.generator, asdict(cfg), template),
                  lambda b: face_quality(b, min_sharpness=0, min_contrast=0),
                  IdentityFilter(models.recognizer, parts, cfg.identity_margin),
                  MedicalPlausibility(models.medical)]

        def bare_loop():
            for start in range(0, samples, batch_size):
                chunk = rows[start:start + batch_size]
                batch = {k: np.array([r[k] for r in chunk], dtype=object if isinstance(chunk[0][k], str) else None)
                         for k in chunk[0]}
                for stage in stages:
                    batch = stage(batch)
                write_parts(batch, output_uri=f"{directory}/bare")

        # One worker is one core: the bare loop's torch on one thread, as each generator actor's.
        all_cores_s = _timed(bare_loop, 1)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            bare_s = _timed(bare_loop, 1)
        finally:
            torch.set_num_threads(threads)
        started_here = not ray.is_initialized()
        if started_here:
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        ref = index.to_ref()
        end_to_end, marginal = {}, {}
        for actors in (1, 2):
            run_cfg = replace(cfg, generator_actors=actors, filter_actors=1, threads_per_generator=1)

            def stream(n: int):
                out = f"{directory}/ray-{actors}-{n}"
                return lambda: sum(1 for _ in mema_stream(rows[:n], models, ref, run_cfg, template, out, "",
                                                          None).iter_rows())

            end_to_end[actors] = _timed(stream(samples), 1)
            marginal[actors] = _timed(stream(2 * samples), 1) - end_to_end[actors]
        if started_here:
            ray.shutdown()
    bare = samples / bare_s
    return [
        ("images", samples, "images", f"{resolution} px, {steps} denoising steps, batch {batch_size}"),
        ("bare Python loop, one thread", bare, "images/s", "the same stage objects, one process"),
        ("bare Python loop, every core", samples / all_cores_s, "images/s", f"torch on {threads} threads"),
        *[row for actors in (1, 2) for row in (
            (f"Ray Data, {actors} generator actor{'s' * (actors > 1)}, end to end", samples / end_to_end[actors],
             "images/s", "actor start-up included"),
            (f"Ray Data, {actors} generator actor{'s' * (actors > 1)}, marginal", samples / marginal[actors],
             "images/s", f"the second {samples} images of a run over {2 * samples}"))],
        ("1 actor / bare loop", samples / marginal[1] / bare, "x", "marginal; DESIGN bar: >= 0.9"),
        ("2 actors / bare loop", samples / marginal[2] / bare, "x", "marginal; DESIGN bar: >= 1.7 on 2 cores"),
        ("1 actor / bare loop, end to end", bare_s / end_to_end[1], "x", "start-up included"),
        ("2 actors / bare loop, end to end", bare_s / end_to_end[2], "x", "start-up included"),
    ]


def suite_multinode(samples: int = 96, batch_size: int = 16, steps: int = 10, resolution: int = 64,
                    index_rows: int = 4800) -> list[tuple]:
    """build_mema's stream on a local multi-node cluster (`devstack.LocalCluster`: a head that runs no
    work and two 2-CPU workers, each advertising `gpu_node`, a stand-in for a GPU), with its generator
    asking for a whole `gpu_node`: one generator actor uses one worker node, two use both. Marginal
    throughput as in `suite_mema`. The nodes share this machine's cores, so the ratio says what the
    placement and the stream allow here, not what two real GPU nodes give."""
    import tempfile
    from dataclasses import replace

    import ray

    from medeid.config import MemaConfig
    from medeid.devstack import ActorWatch, LocalCluster
    from medeid.pipelines.mema import Progress, mema_stream, pending_rows

    if ray.is_initialized():
        raise RuntimeError("the multinode suite starts its own cluster: run it without Ray initialised")
    template = "a clinical photo of a {sex} patient aged {age_band} with {condition}"
    cfg = MemaConfig(samples=samples, steps=steps, batch_size=batch_size, min_sharpness=0, min_contrast=0,
                     max_attempts=1, strategy="txt2img", filter_actors=1, threads_per_generator=1,
                     generator_resources={"gpu_node": 1})
    conditions = [{"sample_id": f"bench-{i:06d}", "seed": i, "age": 20 + i % 60, "sex": ("female", "male")[i % 2],
                   "disease": "ptosis", "laterality": "left", "severity": 2, "findings": ["moderate", "upper lid droop"]}
                  for i in range(2 * samples)]
    rows = pending_rows(conditions, Progress(), cfg, None)
    workers = [{"num_cpus": 2, "resources": {"gpu_node": 1}}] * 2
    marginal, nodes = {}, {}
    with tempfile.TemporaryDirectory() as directory, LocalCluster(workers, head_cpus=0) as cluster:
        models, index = _mema_models(directory, resolution, index_rows)
        ref = index.to_ref()
        for actors in (1, 2):
            run_cfg = replace(cfg, generator_actors=actors)

            def stream(n: int) -> float:
                started = time.perf_counter()
                # Seldom: each poll is a state-API call to the dashboard, CPU taken from the stream.
                with ActorWatch("GenerateFaces", every_s=3.0) as watch:
                    for _ in mema_stream(rows[:n], models, ref, run_cfg, template, f"{directory}/out-{actors}-{n}",
                                         "", None).iter_rows():
                        pass
                nodes[actors] = watch.nodes & set(cluster.node_ids)
                return time.perf_counter() - started

            once = stream(samples)
            marginal[actors] = stream(2 * samples) - once
    ratio = marginal[1] / marginal[2]
    return [
        ("cluster", 3, "nodes", "head (no work) + 2 workers of 2 CPUs with gpu_node, on this machine's cores"),
        *[(f"generator on {a} worker node{'s' * (a > 1)}, marginal", samples / marginal[a], "images/s",
           f"{len(nodes[a])} node{'s' * (len(nodes[a]) > 1)} seen running the generator") for a in (1, 2)],
        ("2 nodes / 1 node", ratio, "x", "build_mema throughput, generator on 2 vs 1 worker nodes"),
    ]


def _deid_model(directory: str, size: int, seed: int = 0) -> str:
    """An untrained MedSem-DeID of the demo's shape at `size` px (speed does not depend on training)."""
    from dataclasses import asdict

    import torch

    from medeid.config import DeidConfig
    from medeid.models.deid.donors import synthetic_donors
    from medeid.models.deid.model import DeidNetConfig, MedSemDeIDNet, donor_bank
    from medeid.models.medical import MedicalNetConfig

    torch.manual_seed(seed)
    cfg = DeidConfig()
    donors = donor_bank(synthetic_donors(16, size), size)
    net = MedSemDeIDNet(DeidNetConfig(image_size=size, widths=cfg.widths, medical=asdict(MedicalNetConfig(image_size=size)),
                                      donors=len(donors)), donors)
    net.save(f"{directory}/deid-{size}")
    return f"{directory}/deid-{size}"


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
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    table = []
    with tempfile.TemporaryDirectory() as directory:
        for size in sizes:
            uri = _deid_model(directory, size)
            faces = synthetic_donors(32, size, seed=1)
            items = [{"image": faces[i % len(faces)], "key": f"photos/{i:06d}.png"} for i in range(2 * photos)]
            stage = DeidentifyPhotos(uri, secret)

            def bare_loop():
                for start in range(0, photos, batch_size):
                    chunk = items[start:start + batch_size]
                    stage({"image": np.stack([r["image"] for r in chunk]), "key": np.array([r["key"] for r in chunk])})

            threads = torch.get_num_threads()
            all_cores_s = _timed(bare_loop, 1)
            torch.set_num_threads(1)
            try:
                bare_s = _timed(bare_loop, 1)
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


def _detector_pack(directory: str) -> str:
    """A briefly trained detector (~40 s, as the tests' session detector): an untrained one finds
    faces everywhere or nowhere, which would measure another job."""
    from medeid.models.detector import export_detector_pack
    from medeid.train.detector import train_briefly

    export_detector_pack(train_briefly(), f"{directory}/detector", {"det_thresh": 0.5, "note": "benchmark"})
    return f"{directory}/detector"


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
        model, detector = _deid_model(directory, 128), _detector_pack(directory)
        started_here = not ray.is_initialized()
        if started_here:
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
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

                table += _anonymize_rows(store, runs, _timed(bare_loop, 1), files, scale, actors)
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


def _load(url: str, jobs: list[tuple[bytes, str]], clients: int) -> tuple[float, np.ndarray, int]:
    """`jobs` sent by `clients` concurrent HTTP clients: (seconds, per-request latencies, largest batch)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from medeid.client import Client

    local = threading.local()

    def call(job):
        local.client = getattr(local, "client", None) or Client(url)
        started = time.perf_counter()
        answer = local.client.deidentify(job[0], password=job[1])
        return time.perf_counter() - started, answer.batch

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(call, jobs))
    return time.perf_counter() - started, np.array([r[0] for r in results]), max(r[1] for r in results)


def suite_serve(requests: int = 96, concurrency: tuple[int, ...] = (1, 4, 16), size: int = 256,
                max_batch_size: int = 16) -> list[tuple]:
    """The serving endpoint over real HTTP on loopback: `requests` de-identifications of `size` px
    photos (every form, a caller's password each) at each number of concurrent clients, with
    dynamic batching off (batch size 1) and on, on one replica holding every core. Throughput and
    p50/p99 latency; batching on against off. First the same engine in process, without HTTP:
    one photo at a time against batches, the most batching can give on this machine."""
    import tempfile

    import ray
    from ray import serve

    from medeid.devstack import free_port
    from medeid.serve import AppArgs, app
    from medeid.synth.hospital_files import hospital_files

    import torch

    from medeid.config import ServeConfig
    from medeid.passwords import Secret
    from medeid.serve.engine import Engine, Job

    photos = [f.data for f in hospital_files(32, seed=5, size=size)[:32]]
    table = [("requests per measurement", requests, "requests", f"{size} px photos, JPEG/PNG/TIFF/DICOM, one face each; "
                                                                 f"loopback HTTP, one replica on {os.cpu_count()} CPUs")]
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    throughput = {}
    try:
        with tempfile.TemporaryDirectory() as directory:
            args = AppArgs(model_uri=_deid_model(directory, 128), detector_uri=_detector_pack(directory))
            engine = Engine.from_config(ServeConfig(model_uri=args.model_uri, detector_uri=args.detector_uri))
            jobs = [Job(Secret(f"password {i}"), photos[i % len(photos)]) for i in range(requests)]
            threads = torch.get_num_threads()
            torch.set_num_threads(os.cpu_count())
            try:
                alone = _timed(lambda: [engine.deidentify([job]) for job in jobs], 1)
                batched = _timed(lambda: [engine.deidentify(jobs[i:i + max_batch_size])
                                          for i in range(0, requests, max_batch_size)], 1)
            finally:
                torch.set_num_threads(threads)
            table += [("in process: one photo at a time", requests / alone, "photos/s", "no HTTP; every core"),
                      (f"in process: batches of {max_batch_size}", requests / batched, "photos/s",
                       f"{alone / batched:.2f} x one at a time: the most batching can give here")]
            config = os.path.join(directory, "serve.yaml")
            with open(config, "w") as f:  # the replica holds every core (the proxy and controller hold none)
                f.write(f"serve: {{num_cpus: {os.cpu_count()}}}\n")
            for batching, batch_size in (("off", 1), ("on", max_batch_size)):
                serve.run(app(args.model_copy(update={"config": config, "max_batch_size": batch_size})),
                          name="benchmark", route_prefix="/")
                url = f"http://127.0.0.1:{port}"
                _load(url, [(photos[i % len(photos)], f"warm-up {i}") for i in range(16)], 4)
                for clients in concurrency:
                    jobs = [(photos[i % len(photos)], f"password {i}") for i in range(requests)]
                    seconds, latencies, largest = _load(url, jobs, clients)
                    throughput[(batching, clients)] = requests / seconds
                    p50, p99 = np.percentile(latencies, [50, 99]) * 1000
                    table += [
                        (f"batching {batching}, {clients} client{'s' * (clients > 1)}: throughput",
                         requests / seconds, "requests/s", f"largest batch {largest}"),
                        (f"batching {batching}, {clients} client{'s' * (clients > 1)}: latency p50 / p99",
                         f"{p50:.0f} / {p99:.0f}", "ms", ""),
                    ]
    finally:
        serve.shutdown()
        if started_here:
            ray.shutdown()
    for clients in concurrency:
        bar = "; DESIGN bar: >= 2 at 16 clients" if clients == 16 else ""
        table.append((f"batching on / off, {clients} client{'s' * (clients > 1)}",
                      throughput[("on", clients)] / throughput[("off", clients)], "x", f"throughput{bar}"))
    return table


SUITES = {"index": suite_index, "mema": suite_mema, "deid": suite_deid, "anonymize": suite_anonymize,
          "serve": suite_serve, "multinode": suite_multinode}


def _shown(value) -> str:
    return f"{value:,.2f}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else str(value)


def markdown(suite: str, rows: list[tuple]) -> str:
    lines = [f"### {suite} ({machine()})", "", "| measure | value | unit | note |", "| --- | ---: | --- | --- |"]
    lines += [f"| {measure} | {_shown(value)} | {unit} | {note} |" for measure, value, unit, note in rows]
    return "\n".join(lines)


def report(results: dict[str, list[tuple]], minutes: float) -> str:
    """Every suite's figures in one Markdown table, headed by the machine and the date."""
    lines = [f"Measured {dt.date.today().isoformat()} on {machine()}, in {minutes:.0f} min "
             f"(`python jobs/benchmark.py all`).", "",
             "| suite | measure | value | unit | note |", "| --- | --- | ---: | --- | --- |"]
    lines += [f"| {suite} | {measure} | {_shown(value)} | {unit} | {note} |"
              for suite, rows in results.items() for measure, value, unit, note in rows]
    return "\n".join(lines) + "\n"
