"""MeMa's attack audit: released images against a small synthetic archive of real patients, by the
periocular recogniser and the pixel attacker, and the card's bars and pictures that report them."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from medeid import codecs, schema
from medeid.evaluate.attacks import BAND_ROWS, eye_band_bytes
from medeid.mema.attack_audit import ATTACKS, AUDITOR, Bands, audit_attacks, audit_released_attacks
from medeid.mema.card import card_figures, write_card
from medeid.pipelines.synthetic_archive import METADATA, write_photos
from medeid.synth.cohort import cohort_rows, render_row
from tests.mema.test_card import assert_png, bar, build_clean, readme_row, write

SIZE, PATIENTS, PHOTOS, NEWCOMERS, EPOCHS = 64, 150, 3, 8, 20
PERIOCULAR = "eye band re-identifies"
PIXEL = "eye band copies"


@pytest.fixture(scope="module")
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


def test_a_pasted_eye_band_is_a_pixel_copy_and_a_periocular_match(world):
    table, threshold = world["table"], world["auditor"]["threshold"]
    assert table["sample_id"][0] == "pasted"
    assert table["pixel_copy"][0] and table["pixel_distance"][0] < 1.0
    assert table["pixel_nearest_key"][0] == world["keys"][9]
    assert table["periocular_similarity"][0] >= threshold
    assert table["periocular_nearest_key"][0].split("/")[1] == world["keys"][9].split("/")[1]  # the same patient


def test_clean_strangers_pass_both_attackers(world):
    table, threshold = world["table"], world["auditor"]["threshold"]
    assert len(table["sample_id"]) == NEWCOMERS
    assert not any(table["pixel_copy"][1:])
    assert min(table["pixel_distance"][1:]) > world["auditor"]["copy_mad"]
    assert max(table["periocular_similarity"][1:]) < threshold


def test_the_periocular_auditor_beats_chance_by_far(world):
    auditor = world["auditor"]
    assert auditor["photos"] == PATIENTS * PHOTOS and auditor["patients"] == PATIENTS
    assert auditor["chance"] == pytest.approx(1 / PATIENTS)
    # 160 training steps on 450 photos reach about 50 % (chance 0.7 %); a demo-sized archive's 1,600
    # photos reached 87 % (chance 0.25 %).
    assert auditor["top1_others"] >= max(0.4, 50 * auditor["chance"])
    assert auditor["far"] == 1e-3 and 0 <= auditor["found_at_threshold"] <= 1 and auditor["tar"] > 0.1
    assert auditor["pair_threshold"] < auditor["threshold"]  # a pair's tail sits below the nearest-photo tail


def write_attacks(root, world: dict, sample_ids: list[str]) -> None:
    """The world's audit of its first images (the pasted one first), re-labelled as `sample_ids`."""
    rows = {k: v[:len(sample_ids)] for k, v in world["table"].items()}
    table = pa.Table.from_pydict({**rows, "sample_id": sample_ids}, schema=schema.MEMA_ATTACKS)
    write(root, ATTACKS, table.to_pylist(), schema.MEMA_ATTACKS)
    (root / ATTACKS / AUDITOR).write_text(json.dumps({**world["auditor"], "archive": world["archive"]}))


def test_card_fails_the_eye_band_bars_and_shows_the_nearest_real_photos(world, tmp_path):
    conds = build_clean(tmp_path)
    write_attacks(tmp_path, world, [c["sample_id"] for c in conds[:3]])  # the fourth image is not audited
    f = card_figures(str(tmp_path))
    periocular, pixel = bar(f, PERIOCULAR), bar(f, PIXEL)
    assert not periocular["passed"] and periocular["value"] == 1 and "1 not audited" in periocular["detail"]
    assert not pixel["passed"] and pixel["value"] == 1
    assert bar(f, "nearest real patient")["passed"]  # the full-face recognisers saw nothing
    assert f["attacks"]["pixel"]["closest"][0] == {"sample_id": conds[0]["sample_id"], "copy": True,
                                                   "distance": pytest.approx(world["table"]["pixel_distance"][0])}
    write_card(str(tmp_path), config={}, versions={})
    card = tmp_path / "card"
    text = (card / "README.md").read_text()
    assert "| FAIL |" in readme_row(text, PERIOCULAR) and "| FAIL |" in readme_row(text, PIXEL)
    assert "| PASS |" in readme_row(text, "nearest real patient") and "some FAIL" in text
    assert "99.9th percentile" in text and "(../private/attacks/nearest_real.png)" in text
    assert not (card / "nearest_real.png").exists()  # real patients' photos never sit in what ships
    assert_png(tmp_path / "private" / "attacks" / "nearest_real.png")
    assert_png(card / "similarity.png")
    # Two attackers, each a row of released images over a row of their nearest real photos.
    grid = codecs.decode((tmp_path / "private" / "attacks" / "nearest_real.png").read_bytes())
    assert grid.shape[0] > 4 * 128 > grid.shape[0] - 4 * 128 - 100


def test_card_passes_the_eye_band_bars_when_every_image_is_clean(world, tmp_path):
    conds = build_clean(tmp_path)
    clean = {k: v[1:] for k, v in world["table"].items()}  # the clean strangers only
    write_attacks(tmp_path, {**world, "table": clean}, [c["sample_id"] for c in conds])
    f = card_figures(str(tmp_path))
    assert bar(f, PERIOCULAR)["passed"] and bar(f, PIXEL)["passed"]
    assert all(b["passed"] for b in f["bars"])


def test_a_build_without_the_attack_audit_fails_the_eye_band_bars(tmp_path):
    build_clean(tmp_path, attacks=False)
    f = card_figures(str(tmp_path))
    assert f["attacks"] is None
    for measure in (PERIOCULAR, PIXEL):
        assert not bar(f, measure)["passed"] and bar(f, measure)["detail"] == "attack audit not run"
    write_card(str(tmp_path), config={}, versions={})
    text = (tmp_path / "card" / "README.md").read_text()
    assert "The attack audit was not run" in text and not (tmp_path / "card" / "nearest_real.png").exists()


def test_audit_released_attacks_reads_the_build_and_the_archive_with_ray(world, tmp_path, ray_session):
    shards = [{"sample_id": i, "image": codecs.encode(image, "png"), "width": SIZE}
              for i, image in zip(world["ids"], world["released"])]
    (tmp_path / "shards").mkdir()
    pq.write_table(pa.Table.from_pylist(shards), tmp_path / "shards" / "part-0.parquet")
    # One epoch: this is about the reading; the pixel attacker needs no training, so its verdicts say
    # whether Ray read the same photos at the same size as the fixture did.
    found = audit_released_attacks(str(tmp_path / "shards"), world["archive"], str(tmp_path / ATTACKS),
                                   epochs=1, log=None)
    assert (found["released"], found["pixel_copies"], found["photos"]) == (NEWCOMERS, 1, PATIENTS * PHOTOS)
    written = pq.read_table(tmp_path / ATTACKS / "attacks.parquet").to_pydict()
    assert written["sample_id"] == list(world["ids"])
    assert written["pixel_nearest_key"] == world["table"]["pixel_nearest_key"]
    assert written["pixel_distance"] == pytest.approx(world["table"]["pixel_distance"], abs=1e-4)
    assert json.loads((tmp_path / ATTACKS / AUDITOR).read_text())["archive"] == world["archive"]
