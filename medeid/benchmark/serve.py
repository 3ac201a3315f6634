"""The serving endpoint under real HTTP load, batching on vs off, and the in-process ceiling."""

from __future__ import annotations

import os
import time

import numpy as np

from medeid.benchmark.common import timed
from medeid.benchmark.models import deid_model, detector_pack


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
    import torch
    from ray import serve

    from medeid.config import ServeConfig
    from medeid.devstack import free_port
    from medeid.passwords import Secret
    from medeid.serve import AppArgs, app
    from medeid.serve.engine import Engine, Job
    from medeid.synth.hospital_files import hospital_files

    photos = [f.data for f in hospital_files(32, seed=5, size=size)[:32]]
    table = [("requests per measurement", requests, "requests", f"{size} px photos, JPEG/PNG/TIFF/DICOM, one face each; "
                                                                 f"loopback HTTP, one replica on {os.cpu_count()} CPUs")]
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    throughput = {}
    try:
        with tempfile.TemporaryDirectory() as directory:
            args = AppArgs(model_uri=deid_model(directory, 128), detector_uri=detector_pack(directory))
            engine = Engine.from_config(ServeConfig(model_uri=args.model_uri, detector_uri=args.detector_uri))
            jobs = [Job(Secret(f"password {i}"), photos[i % len(photos)]) for i in range(requests)]
            threads = torch.get_num_threads()
            torch.set_num_threads(os.cpu_count())
            try:
                alone = timed(lambda: [engine.deidentify([job]) for job in jobs], 1)
                batched = timed(lambda: [engine.deidentify(jobs[i:i + max_batch_size])
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
