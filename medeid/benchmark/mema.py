"""build_mema's stages: Ray Data with one and two generator actors vs a bare loop; one vs two worker nodes."""

from __future__ import annotations

import os
import time
from dataclasses import replace

import numpy as np

from medeid.benchmark.common import timed
from medeid.models.identity_index import IdentityIndex


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
    from dataclasses import asdict

    import ray
    import torch

    from medeid.config import MemaConfig
    from medeid.pipelines.mema import GenerateFaces, Progress, mema_stream, pending_rows, write_parts
    from medeid.pipelines.mema_filters import IdentityFilter, MedicalPlausibility, face_quality

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
        all_cores_s = timed(bare_loop, 1)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            bare_s = timed(bare_loop, 1)
        finally:
            torch.set_num_threads(threads)
        started_here = not ray.is_initialized()
        if started_here:
            ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        ref = index.to_ref()
        end_to_end, marginal = {}, {}
        for actors in (1, 2):
            run_cfg = replace(cfg, generator_actors=actors, filter_actors=1, threads_per_generator=1)

            def stream(n: int):
                out = f"{directory}/ray-{actors}-{n}"
                return lambda: sum(1 for _ in mema_stream(rows[:n], models, ref, run_cfg, template, out, "",
                                                          None).iter_rows())

            end_to_end[actors] = timed(stream(samples), 1)
            marginal[actors] = timed(stream(2 * samples), 1) - end_to_end[actors]
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
