"""MeMa's dataset card on tiny hand-built output roots (local folders, no Ray)."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from medeid import codecs, schema, storage
from medeid.mema.attack_audit import ATTACKS, AUDITOR
from medeid.mema.card import card_figures, write_card
from medeid.mema.statistics import CohortStatistics

PICTURES = ("similarity.png", "distributions.png", "funnel.png", "samples.png")


def condition(i: int, sex: str, disease: str = "healthy", age: int = 35) -> dict:
    tumour = disease == "periocular_tumour"
    return {"sample_id": f"mema-0-{i:08d}", "seed": 1000 + i, "age": age, "sex": sex, "disease": disease,
            "laterality": "left" if tumour else "none", "severity": 2 if tumour else 0,
            "findings": ["nodule"] if tumour else [], "source_key": None}


def attempt(cond: dict, number: int = 0) -> dict:
    row = {k: cond[k] for k in ("sample_id", "age", "sex", "disease", "laterality", "severity", "findings")}
    return {**row, "attempt": number, "seed": cond["seed"] + 100 * number, "strategy": "txt2img"}


def released(cond: dict, number: int = 0, similarity: float = 0.3, predicted: str | None = None) -> dict:
    colour = np.full((32, 32, 3), (40 * number + 5 * int(cond["sample_id"][-2:])) % 255, dtype=np.uint8)
    mask = None
    if cond["disease"] == "periocular_tumour":
        lesion = np.zeros((32, 32), dtype=bool)
        lesion[10:20, 4:12] = True
        mask = codecs.encode(lesion, "png")
    return {**attempt(cond, number), "prompt": "a face", "source_key": None, "generator_version": "abc123",
            "image": codecs.encode(colour, "png"), "width": 32, "height": 32, "sharpness": 120.0,
            "nearest_similarity": similarity, "identity_threshold": 0.6,
            "predicted_disease": predicted or cond["disease"], "disease_confidence": 0.9, "lesion_mask": mask,
            "mask_source": "segmenter:v1" if mask else None}


def rejected(cond: dict, number: int, stage: str, reason: str, similarity: float | None = None) -> dict:
    return {**attempt(cond, number), "stage": stage, "reason": reason, "figure": similarity,
            "threshold": 0.6 if stage == "identity" else None, "nearest_similarity": similarity}


def write(root, folder: str, rows: list[dict], table_schema: pa.Schema, name: str = "part-0",
          row_group_size: int | None = None) -> None:
    (root / folder).mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(rows, schema=table_schema)
    pq.write_table(table, root / folder / f"{name}.parquet", row_group_size=row_group_size)


def save_statistics(root) -> None:
    CohortStatistics(patients=100, p_age={"30-39": 0.5, "40-49": 0.5}, p_sex={"female": 0.5, "male": 0.5},
                     p_disease={"healthy": 0.8, "periocular_tumour": 0.2}, presentations={}).save(
        str(root / "statistics.json"))


def build_flawed(root) -> None:
    """10 requested (5 female, 5 male; 2 tumours); 5 released (3 female, 2 male: sex TV 0.10), one of
    them at the identity threshold and one the classifier disagrees with; 5 attempts rejected."""
    conds = [condition(i, "female" if i < 5 else "male", "periocular_tumour" if i in (0, 5) else "healthy",
                       age=30 if i % 2 else 39) for i in range(10)]
    write(root, "conditions", conds, schema.MEMA_CONDITION)
    shards = [released(conds[0], 1), released(conds[1]), released(conds[2]),
              released(conds[6], similarity=0.6), released(conds[7], predicted="ptosis")]
    # Two files, one with a row group per row, so sample images are looked up across row groups.
    write(root, "shards", shards[:2], schema.MEMA_IMAGE, "part-0")
    write(root, "shards", shards[2:], schema.MEMA_IMAGE, "part-1", row_group_size=1)
    write(root, "rejections", [
        rejected(conds[0], 0, "quality", "too blurry"),
        rejected(conds[3], 0, "identity", "matches a real patient", 0.7),
        rejected(conds[3], 1, "identity", "matches a real patient", 0.8),
        rejected(conds[4], 0, "plausibility", "classifier sees another disease"),
        rejected(conds[5], 0, "quality", "too blurry"),
    ], schema.MEMA_REJECTION)
    save_statistics(root)


def build_clean(root, attacks: bool = True, tstr: bool = True, distance: float | None = 1.5) -> list[dict]:
    """4 requested and released (2 female, 2 male; 2 tumours), one attempt rejected, audits clean (the
    eye-band attackers' left out unless `attacks`), a train-on-MeMa test that meets its bars (unless not `tstr`)
    and a face distance `distance` times the real-vs-real one (none if None)."""
    conds = [condition(i, sex, disease) for i, (sex, disease) in enumerate(
        [("female", "healthy"), ("male", "healthy"), ("female", "periocular_tumour"), ("male", "periocular_tumour")])]
    write(root, "conditions", conds, schema.MEMA_CONDITION)
    write(root, "shards", [released(conds[0], 1)] + [released(c) for c in conds[1:]], schema.MEMA_IMAGE)
    write(root, "rejections", [rejected(conds[0], 0, "identity", "matches a real patient", 0.9)],
          schema.MEMA_REJECTION)
    write_audit(root, [0.2, 0.3, 0.25, 0.1], conds)
    if attacks:
        write_clean_attacks(root, conds)
    if tstr:
        write_tstr(root, disease=(0.81, 0.9), dice=(0.6, 0.7))
    if distance is not None:
        write_face_distance(root, distance)
    save_statistics(root)
    return conds


def write_tstr(root, disease: tuple[float, float], dice: tuple[float, float]) -> None:
    """`mema/tstr.py`'s figures: (trained on MeMa, trained on real) for each compared figure."""
    from medeid.mema.tstr import compare

    keys = {"disease_accuracy": disease, "tumour_dice": dice, "laterality_accuracy": (0.9, 0.95),
            "severity_accuracy": (0.6, 0.7)}
    figures = compare({k: v[0] for k, v in keys.items()}, {k: v[1] for k, v in keys.items()})
    (root / "tstr").mkdir(exist_ok=True)
    (root / "tstr" / "figures.json").write_text(json.dumps({**figures, "mema_images": 4, "epochs": 40,
                                                            "real_train_photos": 64}))


def write_face_distance(root, ratio: float) -> None:
    """`mema/face_distance.py`'s figures with MeMa `ratio` times as far from the real photos as real from real."""
    (root / "audit").mkdir(exist_ok=True)
    (root / "audit" / "face_distance.json").write_text(json.dumps({
        "mema_to_real": 0.2 * ratio, "real_to_real": 0.2, "ratio": ratio, "images": 4, "repeats": 5,
        "real_photos": 40, "real_patients": 10}))


def write_audit(root, similarities: list[float], conds: list[dict]) -> None:
    write(root, "audit", [{"sample_id": c["sample_id"], "evaluator_similarity": s,
                           "evaluator_threshold": 0.75} for s, c in zip(similarities, conds)], schema.MEMA_AUDIT)


def write_clean_attacks(root, conds: list[dict]) -> None:
    """The eye-band attackers found nothing: far from the threshold, no copy (no archive recorded)."""
    write(root, ATTACKS, [{"sample_id": c["sample_id"], "periocular_similarity": 0.3 + 0.1 * i,
                           "periocular_nearest_key": f"photos/P{i}/P{i}_00.png", "periocular_threshold": 0.8,
                           "pixel_distance": 30.0 - i, "pixel_nearest_key": f"photos/P{i}/P{i}_01.png",
                           "pixel_copy": False} for i, c in enumerate(conds)], schema.MEMA_ATTACKS)
    (root / ATTACKS / AUDITOR).write_text(json.dumps({"threshold": 0.8, "far": 1e-3, "top1_others": 0.95,
                                                      "chance": 0.01, "found_at_threshold": 0.9, "pair_threshold": 0.6,
                                                      "tar": 0.97, "photos": 400, "patients": 100, "epochs": 10,
                                                      "copy_mad": 4.0}))


def bar(figures: dict, measure_part: str) -> dict:
    (found,) = [b for b in figures["bars"] if measure_part in b["measure"]]
    return found


def readme_row(text: str, measure_part: str) -> str:
    (line,) = [line for line in text.splitlines() if line.startswith("| ") and measure_part in line]
    return line


def assert_png(path) -> None:
    with Image.open(path) as image:
        image.verify()
        assert image.format == "PNG"
    with Image.open(path) as image:
        assert image.width > 50 and image.height > 50


@pytest.fixture(scope="module")
def flawed(tmp_path_factory):
    root = tmp_path_factory.mktemp("flawed")
    build_flawed(root)
    readme = write_card(str(root), config={"mema": {"requested": 10, "seed": 0}}, versions={"ray": "2.0.0"},
                        samples_per_condition=3)
    return root, readme


def test_counts_funnel_and_accounting(flawed):
    f = card_figures(str(flawed[0]))
    assert (f["requested"], f["released"], f["rejected"], f["sampled"]) == (10, 5, 5, 10)
    assert f["unfilled"] == 5  # 3 (identity twice), 4, 5 rejected; 8 and 9 never attempted
    assert f["accounting"]["never_attempted"] == 2
    assert f["rejected_by_stage"] == {"quality": 2, "identity": 2, "plausibility": 1, "surplus": 0}
    assert f["rejected_by_reason"] == {"too blurry": 2, "matches a real patient": 2,
                                       "classifier sees another disease": 1}
    assert f["per_stage_pass_rate"] == pytest.approx({"quality": 0.8, "identity": 0.75, "plausibility": 5 / 6,
                                                      "surplus": 1.0})
    assert f["funnel"][-1]["passed"] == f["released"]
    assert f["mema_seg"] == 1
    assert bar(f, "accounting")["passed"]


def test_distances_and_agreement_computed_by_hand(flawed):
    f = card_figures(str(flawed[0]))
    # Requested 50/50 female/male, released 3/2: TV = 0.10, over the bar.
    assert f["tv"] == pytest.approx({"age": 0.0, "sex": 0.10, "disease": 0.0})
    assert f["distributions"]["age"]["released"] == {"30-39": 1.0}
    # The cohort has half its patients in 40-49, none of which were requested.
    assert f["tv_vs_cohort"] == pytest.approx({"age": 0.5, "sex": 0.10, "disease": 0.0})
    assert f["plausibility_agreement"] == pytest.approx(0.8)
    assert not bar(f, "P(sex)")["passed"]
    assert bar(f, "P(age)")["passed"] and bar(f, "P(disease)")["passed"]
    assert not bar(f, "medical classifier")["passed"]


def test_a_released_image_at_the_threshold_is_a_match(flawed):
    f = card_figures(str(flawed[0]))
    assert f["matches_pipeline"] == 1  # similarity 0.6 == threshold 0.6
    assert f["max_nearest_similarity"] == pytest.approx(0.6)
    assert f["identity_threshold"] == pytest.approx(0.6)
    assert f["audit"] is None
    privacy = bar(f, "nearest real patient")
    assert not privacy["passed"] and privacy["value"] == 1 and "audit not run" in privacy["detail"]


def test_card_readme_and_pictures(flawed):
    root, readme = flawed
    assert readme == str(root / "card" / "README.md")
    text = (root / "card" / "README.md").read_text()
    assert "| FAIL |" in readme_row(text, "P(sex)") and "| PASS |" in readme_row(text, "P(disease)")
    assert "| FAIL |" in readme_row(text, "nearest real patient")
    assert "| PASS |" in readme_row(text, "accounting")
    assert "audit was not run" in text and "some FAIL" in text
    assert "```yaml\nmema:\n  requested: 10\n  seed: 0\n```" in text
    assert "| ray | 2.0.0 |" in text
    for name in PICTURES + ("mema_seg.png",):
        assert f"({name})" in text
        assert_png(root / "card" / name)
    assert json.loads((root / "card" / "figures.json").read_text())["released"] == 5


def test_clean_build_passes_every_bar(tmp_path):
    build_clean(tmp_path)
    f = card_figures(str(tmp_path))
    assert [b["passed"] for b in f["bars"]] == [True] * 11
    assert f["audit"] == {"audited": 4, "unaudited": 0, "max_similarity": pytest.approx(0.3), "threshold": 0.75,
                          "matches": 0}
    write_card(str(tmp_path), config={}, versions={})
    text = (tmp_path / "card" / "README.md").read_text()
    assert "| FAIL |" not in text and text.count("| PASS |") == 11 and "all PASS" in text
    assert "| disease accuracy | 0.810 | 0.900 | 0.900 |" in text  # the TSTR table: MeMa, real, ratio
    assert_png(tmp_path / "card" / "similarity.png")  # with the audit's and the attackers' panels


def test_train_on_mema_bars_take_shares_of_the_real_trained_figures(tmp_path):
    build_clean(tmp_path, tstr=False)
    f = card_figures(str(tmp_path))
    disease, dice = bar(f, "test on real: disease"), bar(f, "test on real: lesion Dice")
    assert not disease["passed"] and disease["detail"] == dice["detail"] == "train-on-MeMa test not run"
    assert (disease["bar"], dice["bar"]) == (">= 0.85", ">= 0.75")
    write_card(str(tmp_path), config={}, versions={})
    assert "**Not run** (no `tstr/figures.json`)" in (tmp_path / "card" / "README.md").read_text()
    write_tstr(tmp_path, disease=(0.72, 0.9), dice=(0.6, 0.7))  # 0.80 of the real-trained accuracy: under 0.85
    f = card_figures(str(tmp_path))
    disease, dice = bar(f, "test on real: disease"), bar(f, "test on real: lesion Dice")
    assert not disease["passed"] and disease["value"] == pytest.approx(0.8) and dice["passed"]
    assert "0.720 trained on 4 MeMa images vs 0.900 trained on 64 real photos" == disease["detail"]


def test_face_distance_bar_takes_twice_the_real_vs_real_distance(tmp_path):
    build_clean(tmp_path, distance=None)
    measure = "distance to the real photos"
    assert not bar(card_figures(str(tmp_path)), measure)["passed"]
    write_card(str(tmp_path), config={}, versions={})
    assert "**Not measured** (no `audit/face_distance.json`)" in (tmp_path / "card" / "README.md").read_text()
    write_face_distance(tmp_path, 2.0)  # at the bar passes; a smudge farther than twice fails
    assert bar(card_figures(str(tmp_path)), measure)["passed"]
    write_face_distance(tmp_path, 2.6)
    row = bar(card_figures(str(tmp_path)), measure)
    assert not row["passed"] and row["value"] == pytest.approx(2.6) and "MeMa to real 0.520" in row["detail"]
    write_card(str(tmp_path), config={}, versions={})
    assert "| MeMa to real | 0.520 |" in (tmp_path / "card" / "README.md").read_text()


def test_an_evaluator_match_or_an_unaudited_image_fails_privacy(tmp_path):
    conds = build_clean(tmp_path)
    write_audit(tmp_path, [0.2, 0.3, 0.8, 0.1], conds)  # 0.8 >= the evaluator's 0.75
    f = card_figures(str(tmp_path))
    assert f["matches_pipeline"] == 0 and f["audit"]["matches"] == 1
    assert not bar(f, "nearest real patient")["passed"]
    write_audit(tmp_path, [0.2, 0.3, 0.25], conds)  # the fourth image was not audited
    f = card_figures(str(tmp_path))
    assert f["audit"]["unaudited"] == 1 and not bar(f, "nearest real patient")["passed"]


def test_accounting_catches_gaps_and_unexplained_rejections(tmp_path):
    conds = build_clean(tmp_path)
    write(tmp_path, "rejections", [rejected(conds[0], 0, "identity", " ", 0.9),  # no reason
                                   rejected(conds[1], 2, "quality", "too blurry")],  # attempt 1 left no row
          schema.MEMA_REJECTION)
    f = card_figures(str(tmp_path))
    assert f["accounting"]["rejections_without_stage_or_reason"] == 1
    assert f["accounting"]["missing_attempts"] == 1
    accounting = bar(f, "accounting")
    assert not accounting["passed"] and accounting["value"] == 2


def test_everything_rejected_still_makes_a_card(tmp_path):
    conds = [condition(i, "female") for i in range(3)]
    write(tmp_path, "conditions", conds, schema.MEMA_CONDITION)
    write(tmp_path, "shards", [], schema.MEMA_IMAGE)
    write(tmp_path, "rejections", [rejected(c, 0, "identity", "matches a real patient", 0.9) for c in conds],
          schema.MEMA_REJECTION)
    f = card_figures(str(tmp_path))
    assert (f["released"], f["rejected"], f["sampled"], f["unfilled"], f["mema_seg"]) == (0, 3, 3, 3, 0)
    assert f["tv"] == {"age": None, "sex": None, "disease": None} and f["tv_vs_cohort"]["sex"] is None
    assert f["plausibility_agreement"] is None and f["max_nearest_similarity"] is None
    assert f["identity_threshold"] == pytest.approx(0.6)  # from the rejections
    assert f["per_stage_pass_rate"] == {"quality": 1.0, "identity": 0.0, "plausibility": None, "surplus": None}
    write_card(str(tmp_path), config={"mema": {"requested": 3}}, versions={"ray": "2.0.0"})
    text = (tmp_path / "card" / "README.md").read_text()
    assert "No image was released" in text
    for name in PICTURES:
        assert_png(tmp_path / "card" / name)
    assert not (tmp_path / "card" / "mema_seg.png").exists()


def test_nothing_attempted_yet(tmp_path):
    write(tmp_path, "conditions", [condition(i, "male") for i in range(2)], schema.MEMA_CONDITION)
    f = card_figures(str(tmp_path))  # no shards, rejections, audit or statistics
    assert (f["requested"], f["released"], f["sampled"], f["unfilled"]) == (2, 0, 0, 2)
    # Nothing released matches anyone and nothing is unaccounted for; the rest cannot pass.
    assert [b["passed"] for b in f["bars"]] == [True, True, True] + [False] * 5 + [True, False, False]
    write_card(str(tmp_path), config={}, versions={})
    assert "no attempt was made" in (tmp_path / "card" / "README.md").read_text()


def test_a_root_without_conditions_is_not_a_build(tmp_path):
    with pytest.raises(FileNotFoundError, match="not the root of a MeMa build"):
        card_figures(str(tmp_path / "typo"))


def test_samples_grid_has_a_column_per_sample(tmp_path):
    build_clean(tmp_path)
    widths = []
    for per_condition in (1, 3):
        write_card(str(tmp_path), config={}, versions={}, samples_per_condition=per_condition)
        with Image.open(tmp_path / "card" / "samples.png") as image:
            widths.append(image.width)
    assert widths[1] > widths[0]


def test_card_on_s3(tmp_path, bucket):
    build_clean(tmp_path)
    storage.copy_tree(str(tmp_path), f"{bucket}/mema")
    readme = write_card(f"{bucket}/mema", config={}, versions={})
    assert readme == f"{bucket}/mema/card/README.md"
    assert "all PASS" in storage.read_bytes(readme).decode()
    assert storage.exists(f"{bucket}/mema/card/mema_seg.png")
