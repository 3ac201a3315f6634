"""The identity filter's query against a large index: chunked vs one full product."""

from __future__ import annotations

import numpy as np

from medeid.benchmark.common import peak_bytes, timed
from medeid.models.identity_index import IdentityIndex


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

    chunked_s, full_s = timed(lambda: index.max_similarity(queries), repeats), timed(full_product, 1)
    chunked_peak, full_peak = peak_bytes(lambda: index.max_similarity(queries)), peak_bytes(full_product)
    return [
        ("index rows", rows, "embeddings", f"{dim}-d float16, {vectors.nbytes / 2**30:.2f} GiB"),
        ("chunked query", batch / chunked_s, "faces/s", f"batch {batch}, chunks of {chunk_rows} rows"),
        ("full-product baseline", batch / full_s, "faces/s", "float32 copy of the index, one product"),
        ("chunked / baseline throughput", full_s / chunked_s, "x", ""),
        ("chunked peak extra memory", chunked_peak / 2**20, "MiB", "one chunk and its product"),
        ("baseline peak extra memory", full_peak / 2**20, "MiB", ""),
    ]
