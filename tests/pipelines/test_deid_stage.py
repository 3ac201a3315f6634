"""MedSem-DeID as a Ray Data stage: each photo de-identified under its own key's password, which
restores it; no password column anywhere."""

from dataclasses import asdict

import numpy as np
import torch

from medeid.models.deid.api import RECOVERED, MedSemDeID
from medeid.models.deid.donors import synthetic_donors
from medeid.models.deid.model import DeidNetConfig, MedSemDeIDNet, donor_bank
from medeid.models.medical import MedicalNetConfig
from medeid.passwords import Secret, image_password
from medeid.pipelines.deid import DeidentifyPhotos


def test_stage_deidentifies_each_photo_under_its_own_password(ray_session, tmp_path):
    import ray

    torch.manual_seed(0)
    donors = donor_bank(synthetic_donors(4, 64), 64)
    MedSemDeIDNet(DeidNetConfig(image_size=64, widths=(8, 16, 16), donors=4,
                                medical=asdict(MedicalNetConfig(image_size=64, widths=(8, 16, 24, 32)))),
                  donors).save(tmp_path / "deid")
    faces = synthetic_donors(6, 64, seed=9)
    keys = [f"photos/P{i}/ä b {i}.png" for i in range(6)]
    secret = Secret("archive secret")
    rows = (ray.data.from_items([{"image": f, "key": k} for f, k in zip(faces, keys)])
            .map_batches(DeidentifyPhotos, batch_size=4, compute=ray.data.ActorPoolStrategy(size=1), num_cpus=0.5,
                         fn_constructor_kwargs={"model_uri": str(tmp_path / "deid"), "secret": secret})
            .take_all())
    assert sorted(r["key"] for r in rows) == sorted(keys)
    assert all("password" not in name for name in rows[0])
    model = MedSemDeID.from_uri(str(tmp_path / "deid"))
    assert {r["model_version"] for r in rows} == {model.version}
    by_key = {r["key"]: r for r in rows}
    for face, key in zip(faces, keys):
        out = by_key[key]["deid_image"]
        assert out.shape == face.shape and not np.array_equal(out, face)
        back = model.recover([out], image_password(secret, key))
        assert back.status == [RECOVERED]
        mse = np.mean((back.images[0].astype(float) - face) ** 2)
        assert 10 * np.log10(255**2 / mse) >= 30  # DESIGN §3's recovery bar
        assert model.recover([out], image_password(secret, keys[0] if key != keys[0] else keys[1])).status != [RECOVERED]
