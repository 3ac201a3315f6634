"""The MedSem-DeID evaluation: its measures on hand-made outputs, its write-up, and one run end to end
on an untrained world (which checks the dataflow, not the model)."""

import json
from dataclasses import asdict

import numpy as np
import pytest
import torch

from medeid import storage
from medeid.evaluate.deid import evaluate_deid
from medeid.evaluate.figures import (ABLATION, IDEAL_SWAP, MAIN, ORIGINAL, PSNR_CAP, HeldOut, MethodOutputs,
                                     dominated_by, evaluate_methods, frechet_distance, quality_bars,
                                     recovery_quality, reidentification_rate)
from medeid.evaluate.grid import Grid, GridPicker
from medeid.evaluate.privacy import ATTACKERS, BAR_PROTOCOL, PERIOCULAR
from medeid.evaluate.report import FIGURES, GRID, PLOT, REPORT, render_report, summary
from medeid.synth.conditions import DISEASES, PERIOCULAR_TUMOUR

TUMOUR = DISEASES.index(PERIOCULAR_TUMOUR)


def unit_rows(n: int, dim: int = 8) -> np.ndarray:
    return np.eye(dim, dtype=np.float32)[:n]


# ---------------------------------------------------------------------------------------------
# Re-identification


def test_identical_photos_are_all_reidentified():
    gallery = unit_rows(4)
    assert reidentification_rate(gallery, gallery, ["a", "b", "c", "d"], ["a", "b", "c", "d"]) == 1.0


def test_a_query_nearest_another_patient_is_not_reidentified():
    gallery, patients = unit_rows(4), np.array(["a", "a", "b", "b"])
    # Each query points at a photo of the other patient and is orthogonal to its own.
    queries = gallery[[2, 3, 0, 1]]
    assert reidentification_rate(queries, gallery, patients, patients) == 0.0
    # Half of them pointing home: half re-identified.
    assert reidentification_rate(gallery[[0, 3, 0, 3]], gallery, patients, patients) == 0.5


def test_a_query_without_a_face_is_not_reidentified_and_chunks_agree():
    gallery, patients = unit_rows(4), np.array(["a", "b", "c", "d"])
    queries = gallery.copy()
    queries[1] = 0  # the recogniser found no face: a zero vector, whose argmax would be gallery photo 0
    queries[0] = 0
    assert reidentification_rate(queries, gallery, patients, patients) == 0.5
    assert reidentification_rate(queries, gallery, patients, patients, chunk=1) == 0.5


def test_recovery_quality_caps_exact_recovery_and_drops_for_noise():
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, 32)
    originals = np.broadcast_to((ramp[:, None] + ramp[None, :])[None, :, :, None] / 2, (2, 32, 32, 3)).astype(np.uint8)
    psnr, ssim = recovery_quality(originals, originals.copy())
    np.testing.assert_array_equal(psnr, [PSNR_CAP, PSNR_CAP])
    np.testing.assert_array_equal(ssim, [1.0, 1.0])
    noisy = np.clip(originals.astype(int) + rng.integers(-40, 41, originals.shape), 0, 255).astype(np.uint8)
    psnr, ssim = recovery_quality(originals, noisy)
    assert (psnr < 30).all() and (ssim < 0.95).all()


# ---------------------------------------------------------------------------------------------
# Figures and bars from per-photo outputs


def outputs(vectors, predicted, dice, deid: bool = False, **extra) -> MethodOutputs:
    n = len(predicted)
    if deid:
        extra = {"psnr": np.full(n, PSNR_CAP), "ssim": np.ones(n), "recovered": np.ones(n, bool),
                 "wrong_password_vectors": np.zeros_like(vectors), "wrong_password_refused": np.ones(n, bool),
                 "two_password_cosine": np.array([0.1, 0.2, 0.9, 0.3]), **extra}
    return MethodOutputs(np.asarray(vectors, np.float32), np.asarray(predicted), np.asarray(dice, float), **extra)


def world():
    truth = HeldOut(np.array(["a", "a", "b", "b"]), np.array([0, 1, TUMOUR, TUMOUR]))
    gallery = unit_rows(4)
    original = outputs(gallery, [0, 1, TUMOUR, TUMOUR], [1.0, 1.0, 0.8, 0.6])
    # Photo 0 stays nearest its own patient; the rest point at the other patient.
    deid = outputs(gallery[[0, 2, 0, 1]], [0, 1, TUMOUR, 0], [0.0, 0.0, 0.7, 0.35], deid=True)
    blur = outputs(gallery, [0, 0, 0, 0], [1.0, 1.0, 0.0, 0.0])
    return truth, original, {MAIN: deid, "blur": blur}


def test_evaluate_methods_measures_ratios_against_the_originals():
    truth, original, methods = world()
    f = evaluate_methods(truth, original, methods, match_threshold=0.5)
    assert (f["photos"], f["patients"], f["tumour_photos"]) == (4, 2, 2)
    assert f[ORIGINAL]["reidentification_rate"] == 1.0 and f[ORIGINAL]["disease_accuracy"] == 1.0
    assert f[ORIGINAL]["tumour_dice"] == pytest.approx(0.7)  # over the tumour photos only
    m = f["methods"][MAIN]
    assert m["reidentification_rate"] == 0.25
    assert m["disease_accuracy_ratio"] == 0.75
    assert m["dice_ratio"] == pytest.approx(0.525 / 0.7)
    assert m["two_password_differ"] == 0.75  # one of four photos above the 0.5 threshold
    assert m["wrong_password_reidentification_rate"] == 0.0  # zero vectors: no face, nobody re-identified
    assert (m["recovery_psnr"], m["recovery_exact"], m["recovered"]) == (PSNR_CAP, 1.0, 1.0)
    assert "recovery_psnr" not in f["methods"]["blur"]
    json.dumps(f)  # every figure is JSON


def test_utility_intervals_resample_patients_and_narrow_with_more_of_them():
    rng = np.random.default_rng(1)

    def intervals(patients: int, photos: int = 4) -> dict:
        ids = np.repeat(np.arange(patients), photos)
        diseases = rng.integers(0, len(DISEASES), len(ids))
        truth = HeldOut(ids, diseases)
        vectors = np.zeros((len(ids), 8), np.float32)
        original = outputs(vectors, diseases, np.where(truth.tumour, 0.8, 0.0))
        # 10 % of the photos read wrong after de-identification, and tumour Dice falls by a quarter.
        wrong = rng.random(len(ids)) < 0.1
        deid = outputs(vectors, np.where(wrong, (diseases + 1) % len(DISEASES), diseases),
                       np.where(truth.tumour, 0.6, 0.0))
        figures = evaluate_methods(truth, original, {MAIN: deid}, match_threshold=0.5)["methods"][MAIN]
        return figures, figures["utility_intervals"]

    figures, few = intervals(20)
    low, high = few["disease_accuracy_ratio"]
    assert low < figures["disease_accuracy_ratio"] < high and high - low > 0.05
    assert few["dice_ratio"] == pytest.approx([0.75, 0.75])  # every tumour photo lost the same quarter
    assert few["laterality_accuracy_ratio"] is None  # no laterality read: no interval
    _, many = intervals(500)
    assert np.diff(many["disease_accuracy_ratio"])[0] < (high - low) / 3  # 25x the patients: ~1/5 as wide
    # The bar shows its interval and is judged on the value itself.
    bars = quality_bars({MAIN: {**figures, "recovery_psnr": None}})
    bar = next(b for b in bars if b["measure"] == "disease accuracy ratio")
    assert bar["interval"] == [low, high] and bar["passed"] == (figures["disease_accuracy_ratio"] >= 0.95)


def figures_of(reid: float, accuracy: float, dice: float) -> dict:
    return {"reidentification_rate": reid, "disease_accuracy_ratio": accuracy, "dice_ratio": dice}


def test_a_baseline_better_on_every_axis_dominates_and_fails_the_bar():
    main = {**figures_of(0.03, 0.97, 0.92), "recovery_psnr": 40.0, "recovery_ssim": 0.99,
            "wrong_password_reidentification_rate": 0.0, "two_password_differ": 1.0}
    better = figures_of(0.01, 0.99, 0.95)
    worse = figures_of(0.02, 0.50, 0.40)  # more private, far less useful: a trade-off, not domination
    assert dominated_by(main, {"better": better, "worse": worse}) == ["better"]
    assert dominated_by(main, {"same": dict(main)}) == []  # equal on every axis is not better

    bars = {b["measure"]: b for b in quality_bars({MAIN: main, "blur": worse})}
    assert all(b["passed"] for b in bars.values())
    bars = {b["measure"]: b for b in quality_bars({MAIN: main, "blur": worse, "pixelate": better})}
    beats = next(b for name, b in bars.items() if name.startswith("beats every baseline"))
    assert not beats["passed"] and "pixelate" in beats["value"]
    assert sum(not b["passed"] for b in bars.values()) == 1
    bars = {b["measure"]: b for b in quality_bars({MAIN: main, "blur": worse, ABLATION: better})}
    assert not next(b for name, b in bars.items() if name.startswith("beats every baseline"))["passed"]


def test_bars_fail_where_figures_miss_them():
    main = {**figures_of(0.06, 0.9, None), "recovery_psnr": 29.0, "recovery_ssim": 0.99,
            "wrong_password_reidentification_rate": 0.05, "two_password_differ": None}
    failed = {b["measure"] for b in quality_bars({MAIN: main, "blur": figures_of(0.9, 0.1, 0.1)}) if not b["passed"]}
    assert failed == {"re-identification, full-face evaluator (own original in the gallery)", "disease accuracy ratio", "lesion Dice ratio",
                      "recovery PSNR (right password)", "two passwords, same photo: identities differ"}


def test_the_grid_takes_one_photo_per_disease_tumour_first_then_fills():
    picker = GridPicker(columns=3)
    images = np.arange(5)[:, None, None, None] * np.ones((5, 2, 2, 3), np.uint8)
    picker.offer(np.array([0, 0, TUMOUR, 0, 0]), {"original": images, MAIN: 255 - images})
    grid = picker.grid()
    assert grid.columns == [PERIOCULAR_TUMOUR, DISEASES[0], DISEASES[0]]
    assert list(grid.rows) == ["original", MAIN]
    assert [int(i[0, 0, 0]) for i in grid.rows["original"]] == [2, 0, 1]


# ---------------------------------------------------------------------------------------------
# The write-up


def test_render_report_writes_the_tables_plots_and_numbers(tmp_path):
    truth, original, methods = world()
    figures = evaluate_methods(truth, original, methods, match_threshold=0.5)
    figures["models"] = {MAIN: {"uri": "/models/deid", "version": "abc123"}}
    picture = np.zeros((16, 16, 3), np.uint8)
    grid = Grid({"original": [picture, picture], MAIN: [picture, picture]}, ["healthy", PERIOCULAR_TUMOUR])

    report = render_report(figures, grid, str(tmp_path / "eval"))

    assert {p.name for p in (tmp_path / "eval").iterdir()} == {REPORT, GRID, PLOT, FIGURES}
    text = storage.read_bytes(report).decode()
    assert "| **MedSem-DeID** | 25.0% | n/a | 0.750 |" in text
    assert "| blur | 100.0% | n/a | 0.250 |" in text and "originals (reference)" in text
    assert "| re-identification, full-face evaluator (own original in the gallery) | <= 5% | 25.0% | FAIL |" in text
    assert "The attack suite was not run." in text
    assert "| recovery PSNR (right password) | >= 30 dB | exact (∞) | PASS |" in text
    assert "| disease accuracy ratio | >= 0.95 | 0.750 (95 % CI " in text  # two patients: a wide interval
    assert "abc123" in text and "some FAIL" in text
    assert json.loads((tmp_path / "eval" / FIGURES).read_text())["methods"][MAIN]["reidentification_rate"] == 0.25
    for name in (GRID, PLOT):
        assert (tmp_path / "eval" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "FAIL  re-identification, full-face evaluator (own original in the gallery): 25.0%" in summary(figures)


# ---------------------------------------------------------------------------------------------
# End to end on an untrained world


@pytest.fixture(scope="module")
def untrained_world(ray_session, s3, tmp_path_factory):
    from medeid.models.deid.model import DeidNetConfig, MedSemDeIDNet
    from medeid.models.export import export_recognizer_pack
    from medeid.models.medical import MedicalNet, MedicalNetConfig
    from medeid.models.recognizer import Recognizer
    from medeid.pipelines.synthetic_archive import build_archive

    root = f"s3://deid-eval-{np.random.default_rng().integers(1 << 30):x}"
    storage.make_bucket(root, s3.settings)
    archive = build_archive(f"{root}/archive", 16, 2, size=64, seed=3)
    models = tmp_path_factory.mktemp("deid-eval-models")
    torch.manual_seed(0)
    medical = MedicalNet(MedicalNetConfig(image_size=64, widths=(8, 16, 24, 32))).eval()
    medical.save(models / "medical")
    export_recognizer_pack(Recognizer("mobile"), models / "evaluator", {"match_threshold": 0.9})
    donors = torch.randint(0, 255, (4, 64, 64, 3), dtype=torch.uint8)
    for name, use_enc_med in (("deid", True), ("deid-no-med", False)):
        net = MedSemDeIDNet(DeidNetConfig(image_size=64, widths=(8, 16, 16), medical=asdict(medical.config),
                                          donors=4, use_enc_med=use_enc_med), donors)
        net.medical.load_state_dict(medical.state_dict())
        net.save(models / name)
    return {"archive": archive.root, "models": models, "metadata": archive.metadata, "root": root}


@pytest.mark.slow
def test_evaluate_deid_end_to_end_on_untrained_models(untrained_world, s3):
    from medeid.train.data import split_of

    models = untrained_world["models"]
    figures, grid = evaluate_deid(untrained_world["archive"], {MAIN: str(models / "deid"),
                                                               ABLATION: str(models / "deid-no-med")},
                                  str(models / "evaluator"), str(models / "medical"), batch_size=4,
                                  periocular_epochs=2, adaptive_epochs=1)

    patients = untrained_world["metadata"]["patient_id"].to_pylist()
    held_out = [p for p in patients if split_of(p) == "test"]
    assert figures["photos"] == len(held_out) and figures["patients"] == len(set(held_out))
    assert figures[ORIGINAL]["reidentification_rate"] == 1.0  # each original finds itself
    assert list(figures["methods"]) == [MAIN, ABLATION, "blur", "pixelate", "black box", "eyes-kept box", IDEAL_SWAP]
    for name in (MAIN, ABLATION):
        m = figures["methods"][name]
        # The right password opens every seal (a JPEG of the face: close, not exact); a wrong one none.
        assert m["recovered"] == 1.0 and m["wrong_password_refused"] == 1.0
        assert 25 < m["recovery_psnr"] < PSNR_CAP and 0.9 < m["recovery_ssim"] < 1
        assert m["two_password_differ"] is not None
    privacy = figures["privacy"]
    assert set(privacy["attacks"]) == set(figures["methods"]) and set(privacy["wrong password"]) == {MAIN, ABLATION}
    for name, attacked in privacy["attacks"].items():  # every attacker, both protocols (black box: no copies)
        assert set(attacked) == set(ATTACKERS), name
        assert all(0 <= attacked[a][p] <= 1 for a in attacked for p in ("own", "others"))
    assert privacy["training"]["photos"] > 0 and 0 < privacy["references"]["label oracle"][BAR_PROTOCOL] <= 1
    assert privacy["strength"]["periocular"] == privacy["originals"][PERIOCULAR][BAR_PROTOCOL]
    assert privacy["originals"]["pixel"]["own"] == 1.0  # every original is its own nearest copy
    measures = [b["measure"] for b in figures["bars"]]
    assert sum("periocular" in m for m in measures) >= 2 and any("wrong password" in m for m in measures)
    assert figures["models"][MAIN]["version"] != "untracked"
    assert grid.columns and list(grid.rows)[:5] == [ORIGINAL, MAIN, "recovered (right password)",
                                                    "recovered (wrong password)", f"{MAIN}, another password"]
    assert IDEAL_SWAP in grid.rows
    assert {len(images) for images in grid.rows.values()} == {len(grid.columns)}

    report = render_report(figures, grid, f"{untrained_world['root']}/eval", s3.settings)
    text = storage.read_bytes(report, s3.settings).decode()
    assert "| beats every baseline" in text and "### Gallery: other photos only" in text and "*label oracle*" in text


def test_a_box_that_keeps_the_eyes_but_is_no_face_does_not_dominate_a_face():
    main = {**figures_of(0.03, 0.99, 0.99), "face_distance": 0.15}
    eyes_in_a_box = {**figures_of(0.01, 1.00, 1.00), "face_distance": 1.8}
    assert dominated_by(main, {"eyes-kept box": eyes_in_a_box}) == []
    assert dominated_by(main, {"eyes-kept box": {**eyes_in_a_box, "face_distance": 0.1}}) == ["eyes-kept box"]


def test_frechet_distance_is_zero_for_one_distribution_and_grows_with_a_shift():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(400, 64)), rng.normal(size=(400, 64))
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-6)
    same, shifted = frechet_distance(a, b), frechet_distance(a + 0.5, b)
    assert shifted == pytest.approx(same + 64 * 0.25, rel=0.05)  # the means' squared distance adds on
    few = rng.normal(size=(20, 64))  # fewer photos than dimensions: singular covariances, still finite
    assert np.isfinite(frechet_distance(few, b)) and frechet_distance(few, b) > 0
