"""The eye-band attackers' small world, shared by the attack audit's and the identity filter's tests:
an archive of real patients on local disk and a few drawn faces, one with a real photo's eye band."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from medeid import codecs
from medeid.evaluate.attacks import BAND_ROWS, eye_band_bytes
from medeid.mema.attack_audit import Bands, audit_attacks
from medeid.pipelines.synthetic_archive import METADATA, write_photos
from medeid.synth.cohort import cohort_rows, render_row

SIZE, PATIENTS, PHOTOS, NEWCOMERS, EPOCHS = 64, 150, 3, 8, 30


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """An archive of 150 patients x 3 photos (written as `build_archive` does, without Ray), and eight
    people in no cohort: the first with a real photo's eye band pasted in, the others clean. (With
    much fewer patients, a stranger's eye band lands near some patient's, as in a tiny cohort it would.)"""
    archive = tmp_path_factory.mktemp("archive")
    rows = cohort_rows(PATIENTS + NEWCOMERS, PHOTOS, seed=11)
    real_rows = [r for r in rows if r["patient_index"] < PATIENTS]
    metadata = write_photos(pa.Table.from_pylist(real_rows), root=str(archive), size=SIZE)
    (archive / METADATA).mkdir()
    pq.write_table(metadata, archive / METADATA / "part-0.parquet")
    # As stored (JPEG among them), which is what a generator's source photo is.
    real = np.stack([codecs.decode((archive / key).read_bytes()) for key in metadata["photo_key"].to_pylist()])
    strangers = np.stack([render_row(r, SIZE).image for r in rows if r["patient_index"] >= PATIENTS][::PHOTOS])
    pasted = strangers[0].copy()
    band = slice(round(BAND_ROWS[0] * SIZE), round(BAND_ROWS[1] * SIZE))
    pasted[band] = real[9, band]  # photo 9's eye band in a stranger's face
    released = np.concatenate([pasted[None], strangers[1:]])
    keys = np.array(metadata["photo_key"].to_pylist())
    real_bands = Bands(eye_band_bytes(real), keys, np.array(metadata["patient_id"].to_pylist()))
    ids = np.array(["pasted"] + [f"clean-{i}" for i in range(1, NEWCOMERS)])
    table, auditor = audit_attacks(Bands(eye_band_bytes(released), ids), real_bands, EPOCHS, log=None)
    return {"archive": str(archive), "keys": keys, "released": released, "ids": ids, "table": table.to_pydict(),
            "auditor": auditor}
