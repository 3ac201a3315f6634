"""Build the real-patient identity index from a hospital archive with Ray Data.

Layout, for an output URI `<output>`:
    <output>/*.parquet               one row per embedded photo (schema.IDENTITY_INDEX)
    <output>_quarantine/*.parquet    one row per photo set aside, with its reason (schema.QUARANTINED_PHOTO)

The quarantine sits beside the index rather than inside it, so whatever reads `<output>` reads index
rows only. Both are overwritten on every run, so a re-run leaves one copy of each.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray

from medeid import codecs, schema, storage
from medeid.models.identity import IdentityEmbedder
from medeid.models.identity_index import recognizer_id
from medeid.pipelines.synthetic_archive import metadata_dataset

STAGE = "identity_index"
READ_THREADS = 8  # photo reads wait on the object store, not the CPU
ACTOR_CPUS = 0.5

# In flight between the embedder and the two writers, never written: an index row, or a photo to
# quarantine (embedding null, reason set).
EMBEDDED_PHOTO = pa.schema([f.with_nullable(True) if f.name == "embedding" else f for f in schema.IDENTITY_INDEX]
                           + [pa.field("reason", pa.string(), nullable=True)])


def quarantine_uri(output_uri: str) -> str:
    return str(output_uri).rstrip("/") + "_quarantine"


class PhotoEmbedder:
    """Ray Data map_batches stage: archive photo rows -> identity embeddings, half a CPU per actor.

    Reads `photo_key` and `patient_id`; returns `EMBEDDED_PHOTO`: the `schema.IDENTITY_INDEX` columns
    plus `reason`, null for an embedded photo, and for one to quarantine (missing, undecodable, or
    no face found by the pack's detector) the reason, with a null embedding. The recogniser loads
    once per actor (the pack is copied once per node).
    """

    def __init__(self, archive_root: str, pack_uri: str, settings: storage.S3Settings | None = None):
        self.embedder = IdentityEmbedder.from_uri(pack_uri, settings)
        if self.embedder.dim != schema.IDENTITY_DIM:
            raise ValueError(f"the recogniser in {pack_uri} gives {self.embedder.dim}-d embeddings; the identity "
                             f"index holds {schema.IDENTITY_DIM}-d ones (ArcFace's size)")
        self.model = recognizer_id(self.embedder)
        self.fs, self.root_path = storage.filesystem(archive_root, settings)
        self.pool = ThreadPoolExecutor(READ_THREADS)

    def _load(self, photo_key: str) -> tuple[np.ndarray | None, str | None]:
        """(RGB image, None), or (None, why it cannot be used). Other storage errors propagate."""
        try:
            with self.fs.open_input_stream(f"{self.root_path}/{photo_key}") as stream:
                data = stream.read()
        except FileNotFoundError:
            return None, "missing: no file at the photo key"
        try:
            return codecs.decode(data), None
        except Exception as error:  # whatever the decoder raises, the bytes are not an image
            return None, f"undecodable: {type(error).__name__}: {error}"

    def __call__(self, batch: pa.Table) -> pa.Table:
        loaded = list(self.pool.map(self._load, batch["photo_key"].to_pylist()))
        images, reasons = [image for image, _ in loaded], [reason for _, reason in loaded]
        readable = [i for i, image in enumerate(images) if image is not None]
        embedded = self.embedder.embed([images[i] for i in readable])
        vectors = np.zeros((batch.num_rows, schema.IDENTITY_DIM), dtype=np.float16)
        for i, vector, faces in zip(readable, embedded.vectors, embedded.faces_found):
            if faces == 0:  # a detector ran and found nothing: -1 means no detector, a centred crop
                reasons[i] = "no face found"
            vectors[i] = vector
        invalid = pa.array([reason is not None for reason in reasons], pa.bool_())
        embedding = pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), schema.IDENTITY_DIM, mask=invalid)
        return pa.Table.from_arrays([batch["photo_key"], batch["patient_id"], embedding,
                                     pa.array([self.model] * batch.num_rows, pa.string()),
                                     pa.array(reasons, pa.string())], schema=EMBEDDED_PHOTO)


def index_rows(batch: pa.Table) -> pa.Table:
    """Ray Data map_batches: the embedded photos, in `schema.IDENTITY_INDEX`."""
    kept = batch.filter(batch["reason"].is_null()).select(schema.IDENTITY_INDEX.names)
    return kept.cast(schema.IDENTITY_INDEX)


def quarantine_rows(batch: pa.Table) -> pa.Table:
    """Ray Data map_batches: the photos set aside, in `schema.QUARANTINED_PHOTO`."""
    held = batch.filter(batch["reason"].is_valid())
    return pa.Table.from_arrays([held["photo_key"], held["patient_id"], pa.array([STAGE] * held.num_rows, pa.string()),
                                 held["reason"]], schema=schema.QUARANTINED_PHOTO)


def build_identity_index(archive_root: str, pack_uri: str, output_uri: str,
                         settings: storage.S3Settings | None = None, batch_size: int = 64, workers: int = 1) -> dict:
    """Embed every photo of the archive at `archive_root` with the pack at `pack_uri` into `output_uri`.

    Returns the counts (inputs, written, quarantined, skipped), `reconciled` (inputs = written +
    quarantined + skipped, counted from what landed), where the index and quarantine are, and `models`:
    the recognisers in the index (one ONNX sha256).
    """
    for uri in (archive_root, output_uri):
        storage.check_reachable(uri, settings)
    # 1. The archive's photo rows: only the columns the index keeps.
    photos = metadata_dataset(archive_root, settings, ["photo_key", "patient_id"])
    inputs = photos.count()
    # 2. Embed every photo once; both writers below read the materialised result.
    embedded = photos.map_batches(
        PhotoEmbedder, fn_constructor_kwargs={"archive_root": archive_root, "pack_uri": pack_uri, "settings": settings},
        batch_size=batch_size, batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=workers),
        # Half a CPU each: actors holding every CPU would starve the read tasks feeding them (deadlock).
        num_cpus=ACTOR_CPUS,
    ).materialize()
    # 3. Index rows to the index, the rest to the quarantine, each overwritten.
    quarantine = quarantine_uri(output_uri)
    for uri, rows in ((output_uri, index_rows), (quarantine, quarantine_rows)):
        fs, path = storage.filesystem(uri, settings)
        embedded.map_batches(rows, batch_format="pyarrow").write_parquet(path, filesystem=fs,
                                                                         mode=ray.data.SaveMode.OVERWRITE)
    # 4. Count what landed, not what was sent.
    models = _landed(output_uri, "model", settings)
    written, quarantined = len(models), len(_landed(quarantine, "photo_key", settings))
    return {"inputs": inputs, "written": written, "quarantined": quarantined, "skipped": 0,
            "reconciled": inputs == written + quarantined, "index": output_uri, "quarantine": quarantine,
            "models": sorted(pc.unique(models).to_pylist())}


def _landed(uri: str, column: str, settings: storage.S3Settings | None) -> pa.ChunkedArray:
    """`column` of every row in the Parquet shards under `uri`; empty where nothing was written."""
    if not any(f.endswith(".parquet") for f in storage.list_files(uri, settings)):
        return pa.chunked_array([], pa.string())
    fs, path = storage.filesystem(uri, settings)
    return pq.read_table(path, filesystem=fs, columns=[column])[column]
