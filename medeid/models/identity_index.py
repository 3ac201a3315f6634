"""The real-patient identity index: every real face, so that no synthetic face resembles one.

The index is a float16 matrix of L2-normalised embeddings (one row per real photo) with each row's
patient id and photo key, read from Parquet shards in `schema.IDENTITY_INDEX`. A query is answered
by scanning the matrix in chunks, so memory stays bounded however large the index grows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from medeid import codecs, schema, storage

DEFAULT_CHUNK_ROWS = 65536  # 64 Ki rows: a 128 MiB float32 chunk at 512-d
MAX_OPEN_SET_QUERIES = 20000  # photos scored for the open-set threshold: its 1e-3 quantile from 20 above it


def reached_by_share(values: np.ndarray, share: float) -> float:
    """The value that a `share` of `values` reach (at or above it): an open-set threshold, where `values`
    are each real photo's similarity to its nearest photo of another patient and `share` the FAR."""
    return float(np.sort(values)[int(np.ceil(len(values) * (1 - share))) - 1])


def fixed_sample(n: int, at_most: int, seed: int = 0) -> np.ndarray:
    """Row numbers 0..n-1, or a fixed sorted sample of `at_most` of them when there are more."""
    rows = np.arange(n)
    return rows if n <= at_most else np.sort(np.random.default_rng(seed).choice(rows, at_most, replace=False))


def recognizer_id(embedder) -> str:
    """What the index's `model` column holds for an `IdentityEmbedder`: its ONNX file's sha256.

    Embeddings of two recognisers are not comparable, so a reader checks this before querying.
    """
    return embedder.metadata.get("onnx_sha256") or codecs.sha256(Path(embedder.recognizer.model_file).read_bytes())


class IdentityIndex:
    """N real-patient embeddings (float16, L2-normalised rows) with their patient ids and photo keys.

    Sharing: the matrix is large (1 GiB per million faces), so it must exist once per node, never once
    per actor. `to_ref()` puts the arrays in Ray's object store once; an actor rebuilds the index with
    `IdentityIndex.from_ref(ref)`. `ray.get` of a numpy array (or an Arrow array) held in the object
    store is a read-only view of the node's shared memory, not a copy, and nothing here copies it
    again: the rebuilt matrix is not writeable, which is how the tests check it. Pickling an index is
    refused, because a pickled index (e.g. in `fn_constructor_kwargs`) is one full copy per actor.

    Ids are kept as Arrow string arrays rather than Python lists: they share memory the same way,
    where a million Python strings per actor would not.
    """

    def __init__(self, embeddings: np.ndarray, patient_ids, photo_keys, model: str | None = None,
                 chunk_rows: int = DEFAULT_CHUNK_ROWS):
        # np.asarray leaves a float16 matrix (e.g. a read-only object-store view) as it is.
        self.embeddings = np.asarray(embeddings, dtype=np.float16)
        self.patient_ids = _strings(patient_ids)
        self.photo_keys = _strings(photo_keys)
        if self.embeddings.ndim != 2:
            raise ValueError(f"embeddings must be an (N, D) matrix, got shape {self.embeddings.shape}")
        if not len(self.patient_ids) == len(self.photo_keys) == len(self.embeddings):
            raise ValueError(f"{len(self.embeddings)} embeddings but {len(self.patient_ids)} patient ids and "
                             f"{len(self.photo_keys)} photo keys")
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
        self.model, self.chunk_rows = model, int(chunk_rows)
        self._ref = None  # set by to_ref(), so the arrays are put in the object store once

    @classmethod
    def from_uri(cls, uri: str, settings: storage.S3Settings | None = None,
                 chunk_rows: int = DEFAULT_CHUNK_ROWS) -> "IdentityIndex":
        """Read the index's Parquet shards under `uri` (local folder or S3 prefix)."""
        if not any(f.endswith(".parquet") for f in storage.list_files(uri, settings)):
            raise FileNotFoundError(f"no identity index shards (*.parquet) under {uri}")
        fs, path = storage.filesystem(uri, settings)
        table = pq.read_table(path, filesystem=fs, schema=schema.IDENTITY_INDEX)
        models = pc.unique(table["model"]).to_pylist()
        if len(models) > 1:
            raise ValueError(f"the index under {uri} mixes recognisers {models}: their embeddings are not comparable")
        # One copy to join the shards' chunks; the matrix is then a view of that buffer.
        vectors = table["embedding"].combine_chunks().flatten().to_numpy()
        return cls(vectors.reshape(-1, schema.IDENTITY_DIM), table["patient_id"], table["photo_key"],
                   models[0] if models else None, chunk_rows)

    def to_ref(self):
        """An ObjectRef to the index's arrays in Ray's object store."""
        import ray

        if self._ref is None:
            self._ref = ray.put({"embeddings": self.embeddings, "patient_ids": self.patient_ids,
                                 "photo_keys": self.photo_keys, "model": self.model, "chunk_rows": self.chunk_rows})
        return self._ref

    @classmethod
    def from_ref(cls, ref) -> "IdentityIndex":
        """The index from `to_ref()`'s ref, viewing the object store's copy of the matrix.

        `ref` may also be the value itself, where Ray resolved a ref passed as a top-level argument.
        """
        import ray

        parts = ray.get(ref) if isinstance(ref, ray.ObjectRef) else ref
        return cls(parts["embeddings"], parts["patient_ids"], parts["photo_keys"], parts["model"],
                   parts["chunk_rows"])

    def __reduce__(self):
        raise TypeError("an IdentityIndex is not pickled (that would copy the matrix into every actor): "
                        "pass index.to_ref() and rebuild it with IdentityIndex.from_ref(ref)")

    def __len__(self) -> int:
        return len(self.embeddings)

    @property
    def dim(self) -> int:
        return self.embeddings.shape[1]

    def max_similarity(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The highest cosine similarity of each query over all rows, and the row that has it.

        Args:
            queries: (B, D) embeddings; normalised here, so any scale will do.
        Returns:
            similarity (B,) float32 and index (B,) int64. Memory is bounded by one chunk: the chunk
            in float32 plus its (B, chunk_rows) product; the (B, N) product is never formed.
        """
        queries = self._check(queries)
        best = np.full(len(queries), -np.inf, dtype=np.float32)
        best_row = np.zeros(len(queries), dtype=np.int64)
        rows = np.arange(len(queries))
        for start in range(0, len(self), self.chunk_rows):
            chunk = self.embeddings[start:start + self.chunk_rows].astype(np.float32)
            product = queries @ chunk.T
            local = product.argmax(axis=1)
            values = product[rows, local]
            # Strictly greater: on a tie the earlier row wins, as a single argmax would pick it.
            better = values > best
            best[better], best_row[better] = values[better], local[better] + start
            del chunk, product  # freed before the next chunk's are made, so only one pair is alive
        return best, best_row

    def open_set_threshold(self, far: float, max_queries: int = MAX_OPEN_SET_QUERIES, seed: int = 0) -> float:
        """The cosine that a share `far` of the real photos reach with their nearest photo of *another*
        patient: what a stranger's face reaches against the whole index that often.

        A face is a match to someone in the index only above this figure. The recogniser's per-pair
        match threshold is the wrong rule for a search over every photo: a face unrelated to everyone
        has N chances to pass it (on the demo's 1,600 photos, 98 % of fresh strangers came within the
        filter's margin of it). At most `max_queries` photos (a fixed sample) are scored, against all rows.
        """
        if not 0 < far < 1:
            raise ValueError(f"far must lie in (0, 1), got {far}")
        codes = pc.dictionary_encode(self.patient_ids).indices.to_numpy(zero_copy_only=False)
        if len(np.unique(codes)) < 2:
            raise ValueError("an open-set threshold needs photos of at least two patients in the index")
        rows = fixed_sample(len(self), max_queries, seed)
        queries = self.embeddings[rows].astype(np.float32)
        best = np.full(len(rows), -np.inf, dtype=np.float32)
        for start in range(0, len(self), self.chunk_rows):
            product = queries @ self.embeddings[start:start + self.chunk_rows].astype(np.float32).T
            product[codes[rows][:, None] == codes[None, start:start + self.chunk_rows]] = -np.inf
            best = np.maximum(best, product.max(axis=1))
            del product
        return reached_by_share(best, far)

    def nearest(self, queries: np.ndarray) -> list[dict]:
        """Each query's nearest real photo, as {patient_id, photo_key, similarity}: for audits."""
        similarity, rows = self.max_similarity(queries)
        patients, photos = self.patient_ids.take(pa.array(rows)), self.photo_keys.take(pa.array(rows))
        return [{"patient_id": p, "photo_key": k, "similarity": float(s)}
                for p, k, s in zip(patients.to_pylist(), photos.to_pylist(), similarity)]

    def _check(self, queries: np.ndarray) -> np.ndarray:
        if not len(self):
            raise ValueError("the identity index is empty: there is nothing to compare a face against, "
                             "so no face can be cleared")
        queries = np.asarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"queries must be (B, {self.dim}) to match the index, got shape {queries.shape}")
        return queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)


def _strings(values) -> pa.Array:
    """Ids as one Arrow string array (chunks joined), which shares memory through the object store."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    return values if isinstance(values, pa.Array) and values.type == pa.string() else pa.array(values, pa.string())
