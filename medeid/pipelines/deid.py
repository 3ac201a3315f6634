"""MedSem-DeID as a Ray Data stage: photos in, de-identified photos out, each under its own password.

    ds.map_batches(DeidentifyPhotos, fn_constructor_kwargs={"model_uri": uri, "secret": secret},
                   batch_size=16, compute=ray.data.ActorPoolStrategy(size=2))

The stage never sees a password column: it derives each photo's password from the archive secret
and the photo's key (`passwords.image_password`), so no password travels through the object store,
a dataset preview or a log. The secret is a `Secret`, which prints as `Secret(***)`.
"""

from __future__ import annotations

import numpy as np
import torch

from medeid import storage
from medeid.models.deid.api import MedSemDeID
from medeid.passwords import Secret, image_password


class DeidentifyPhotos:
    """Batch columns: `image` (uint8 RGB photos; a 4-d array or an object array of 3-d ones) and `key`
    (the photo's stable name). Adds `deid_image` (same layout) and `model_version`."""

    def __init__(self, model_uri: str, secret: Secret, settings: storage.S3Settings | None = None,
                 threads: int = 0, device: str = "cpu"):
        if threads:
            torch.set_num_threads(threads)
        self.model = MedSemDeID.from_uri(model_uri, settings, device=device)
        self.secret = secret

    def __call__(self, batch: dict) -> dict:
        images = list(batch["image"])
        passwords = [image_password(self.secret, str(key)) for key in batch["key"]]
        out = self.model.deidentify(images, passwords)
        stacked = isinstance(batch["image"], np.ndarray) and batch["image"].dtype == np.uint8
        column = np.stack(out) if stacked else _objects(out)
        return {**batch, "deid_image": column, "model_version": np.full(len(out), self.model.version)}


def _objects(arrays: list[np.ndarray]) -> np.ndarray:
    column = np.empty(len(arrays), dtype=object)
    column[:] = arrays
    return column
