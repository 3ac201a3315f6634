"""The privacy audit of a MeMa build: every released image against every real patient, measured by
the held-out evaluator recogniser, which no filter used, so MeMa cannot pass by fooling the
recogniser that filtered it. A released image matches a real patient when its nearest real photo
reaches both the evaluator's per-pair match threshold and the index's open-set threshold at the
attack audit's FAR (`IdentityIndex.open_set_threshold`): no closer than strangers come."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import ray

from medeid import codecs, schema, storage
from medeid.mema.attack_audit import FAR
from medeid.models.identity import IdentityEmbedder
from medeid.models.identity_index import IdentityIndex

ACTOR_CPUS = 0.5


class AuditFaces:
    """Actor: the evaluator's nearest-real similarity of each released image."""

    def __init__(self, pack_uri: str, index_ref, open_set: float, settings: storage.S3Settings | None = None):
        self.embedder = IdentityEmbedder.from_uri(pack_uri, settings)
        if self.embedder.match_threshold is None:
            raise ValueError(f"the evaluator pack at {pack_uri} has no match_threshold in its pack.json")
        self.index = IdentityIndex.from_ref(index_ref)
        self.threshold = max(self.embedder.match_threshold, open_set)

    def __call__(self, batch: pa.Table) -> pa.Table:
        images = [codecs.decode(b) for b in batch["image"].to_pylist()]
        similarity, _ = self.index.max_similarity(self.embedder.embed(images).vectors)
        n = batch.num_rows
        return pa.table({"sample_id": batch["sample_id"], "evaluator_similarity": similarity.astype(np.float32),
                         "evaluator_threshold": np.full(n, self.threshold, np.float32)},
                        schema=schema.MEMA_AUDIT)


def audit_released(shards_uri: str, pack_uri: str, index_uri: str, output_uri: str,
                   settings: storage.S3Settings | None = None, batch_size: int = 64) -> int:
    """Write the audit table of every image under `shards_uri` to `output_uri` (overwritten); returns
    the number of rows audited."""
    index = IdentityIndex.from_uri(index_uri, settings)
    fs, path = storage.filesystem(shards_uri, settings)
    out_fs, out_path = storage.filesystem(output_uri, settings)
    open_set = index.open_set_threshold(FAR)
    audited = (ray.data.read_parquet(path, filesystem=fs, columns=["sample_id", "image"])
               .map_batches(AuditFaces, fn_constructor_args=(pack_uri, index.to_ref(), open_set, settings),
                            batch_size=batch_size, batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=1),
                            num_cpus=ACTOR_CPUS))
    audited.write_parquet(out_path, filesystem=out_fs, mode=ray.data.SaveMode.OVERWRITE)
    return _count(output_uri, settings)


def _count(uri: str, settings) -> int:
    import pyarrow.parquet as pq

    fs, _ = storage.filesystem(uri, settings)
    files = [storage.filesystem(f, settings)[1] for f in storage.list_files(uri, settings) if f.endswith(".parquet")]
    return sum(pq.ParquetFile(f, filesystem=fs).metadata.num_rows for f in files)
