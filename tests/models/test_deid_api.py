"""The inference API: de-identify, recover with the right password, refuse a wrong one, and leave
every pixel outside the face as it was."""

import json
from dataclasses import asdict

import cv2
import numpy as np
import pytest
import torch
from insightface.utils.face_align import arcface_dst

from medeid.models.deid.align import face_crop, grown, paste_weight
from medeid.models.deid.api import NO_RECOVERY_DATA, RECOVERED, WRONG_PASSWORD, MedSemDeID, donor_choice
from medeid.models.deid.donors import synthetic_donors
from medeid.models.deid.model import DeidNetConfig, MedSemDeIDNet, donor_bank
from medeid.models.medical import EYE_COLUMNS, EYE_ROWS, MedicalNet, MedicalNetConfig
from medeid.passwords import Secret, derive_model_key
from medeid.synth.conditions import DISEASES, PERIOCULAR_TUMOUR
from tests.models.test_deid_align import photo

SIZE = 64


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(float) - b) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


@pytest.fixture(scope="module")
def model() -> MedSemDeID:
    torch.manual_seed(0)
    medical = MedicalNet(MedicalNetConfig(image_size=SIZE, widths=(8, 16, 24, 32))).eval()
    donors = donor_bank(synthetic_donors(6, SIZE), SIZE)
    net = MedSemDeIDNet(DeidNetConfig(image_size=SIZE, widths=(8, 16, 16), medical=asdict(medical.config),
                                      donors=len(donors)), donors)
    return MedSemDeID(net)


def faces(n: int) -> list[np.ndarray]:
    return [synthetic_donors(1, SIZE, seed=100 + i)[0] for i in range(n)]


def test_recover_restores_what_deidentify_changed_and_only_with_the_right_password(model):
    originals = faces(4)
    anonymized = model.deidentify(originals, Secret("the right password"))
    for original, out in zip(originals, anonymized):
        assert psnr(original, out) < 25  # the face really changed
    recovered = model.recover(anonymized, "the right password")
    assert recovered.status == [RECOVERED] * 4
    for original, back in zip(originals, recovered.images):
        assert psnr(original, back) >= 30

    wrong = model.recover(anonymized, "a wrong password")
    assert wrong.status == [WRONG_PASSWORD] * 4 and not wrong.recovered.any()
    for original, out, back in zip(originals, anonymized, wrong.images):
        np.testing.assert_array_equal(back, out)  # still the de-identified face, not the original
    assert model.recover(originals, "the right password").status == [NO_RECOVERY_DATA] * 4


def test_the_same_password_gives_the_same_output_and_another_a_different_one(model):
    original = faces(1)
    first = model.deidentify(original, "p1")[0]
    np.testing.assert_array_equal(first, model.deidentify(original, "p1")[0])
    assert psnr(first, model.deidentify(original, "p2")[0]) < 30


def test_one_password_per_photo_restores_each_with_its_own(model):
    originals = faces(3)
    passwords = ["a", "b", "c"]
    anonymized = model.deidentify(originals, passwords)
    assert model.recover(anonymized, passwords).status == [RECOVERED] * 3
    assert model.recover(anonymized, ["a", "c", "b"]).status == [RECOVERED, WRONG_PASSWORD, WRONG_PASSWORD]
    with pytest.raises(ValueError, match="2 passwords for 3 photos"):
        model.deidentify(originals, ["a", "b"])


def test_pixels_outside_the_face_are_the_photos_own_bit_for_bit(model):
    wide = photo(90, 150, seed=3)  # central square 90 x 90: 30 columns either side are not face
    anonymized = model.deidentify([wide], "pw")[0]
    outside = paste_weight(wide.shape, face_crop(wide, SIZE)[1]) == 0
    assert outside[:, :29].all() and outside[:, 121:].all()  # at most one pixel of interpolation fringe
    np.testing.assert_array_equal(anonymized[outside], wide[outside])
    assert (anonymized[~outside] != wide[~outside]).any()
    assert psnr(model.recover([anonymized], "pw").images[0], wide) >= 30

    # An aligned face from five landmarks: outside the warped crop nothing changes either.
    big = photo(200, 220, seed=4)
    landmarks = arcface_dst * 1.2 + np.array([40.0, 50.0])
    anonymized = model.deidentify([big], "pw", landmarks=[landmarks])[0]
    outside = paste_weight(big.shape, face_crop(big, SIZE, landmarks)[1]) == 0
    assert outside.mean() > 0.5
    np.testing.assert_array_equal(anonymized[outside], big[outside])
    assert psnr(model.recover([anonymized], "pw", landmarks=[landmarks]).images[0], big) >= 30


def test_a_detected_face_is_cropped_to_the_framing_the_model_learnt_on(model, tmp_path):
    """The template travels with the saved model; crops, pastes, seals and recovery all follow it."""
    from medeid.synth.render import crop_template

    model.net.save(tmp_path / "deid")
    config = (tmp_path / "deid" / "config.json")
    values = json.loads(config.read_text())
    values["crop_template"] = crop_template().ravel().tolist()
    config.write_text(json.dumps(values))
    framed = MedSemDeID.from_uri(str(tmp_path / "deid"))
    big = photo(200, 220, seed=5)
    landmarks = arcface_dst * 1.2 + np.array([40.0, 50.0])
    out, seals = framed.deidentify_faces(big, "pw", [landmarks])
    own = paste_weight(big.shape, face_crop(big, SIZE, landmarks, framed.template)[1]) > 0
    arcface = paste_weight(big.shape, face_crop(big, SIZE, landmarks)[1]) > 0
    np.testing.assert_array_equal(out[~own], big[~own])
    assert (out[own & ~arcface] != big[own & ~arcface]).any(), "it replaced more than ArcFace's crop"
    restored, status = framed.recover_faces(out, "pw", seals)
    assert status == RECOVERED
    np.testing.assert_array_equal(restored, big)


def test_before_any_training_the_face_is_the_keys_donor_eyes_included(model):
    """Nothing of the patient's eye region is kept by design: the new face is the donor's, whole."""
    original = faces(1)[0].astype(int)
    out = model.deidentify_crops(original[None].astype(np.uint8), [derive_model_key("pw")])[0].astype(int)
    choices = model.net.donor_choices(torch.from_numpy(original[None].astype(np.uint8)))[0]
    donor = model.net.donors[choices[donor_choice(derive_model_key("pw"), len(choices))]].numpy().astype(int)
    eyes = (slice(round(EYE_ROWS[0] * SIZE), round(EYE_ROWS[1] * SIZE)),
            slice(round(EYE_COLUMNS[0] * SIZE), round(EYE_COLUMNS[1] * SIZE)))
    chin = (slice(round(0.85 * SIZE), SIZE), slice(None))
    assert np.abs(out[eyes] - donor[eyes]).mean() < np.abs(out[eyes] - original[eyes]).mean() / 3
    assert np.abs(out[chin] - donor[chin]).mean() < 3


def test_photos_must_be_uint8_rgb(model):
    with pytest.raises(ValueError, match="uint8 RGB"):
        model.deidentify([np.zeros((64, 64), np.uint8)], "pw")


def test_the_patients_pixels_can_be_kept_only_where_the_medical_segmenter_marks_lesion():
    """A gate that keeps all it may (as if trained to): with Enc_med it keeps the segmented lesion (here
    the whole band: a segmenter that sees lesion everywhere) and nothing beyond; the ablation without
    Enc_med has no segmenter and keeps nothing."""
    torch.manual_seed(0)
    medical = MedicalNet(MedicalNetConfig(image_size=SIZE, widths=(8, 16, 24, 32))).eval()
    torch.nn.init.constant_(medical.mask_head.bias, 20.0)  # a segmenter that sees lesion everywhere in its band
    tumour = torch.zeros_like(medical.disease_head.bias)
    tumour[DISEASES.index(PERIOCULAR_TUMOUR)] = 50.0  # and a tumour in every photo
    medical.disease_head.bias.data = tumour
    donors = donor_bank(synthetic_donors(6, SIZE), SIZE)
    original = faces(1)[0]
    top, end = medical.config.band_rows(SIZE)
    outputs = {}
    for use_enc_med in (True, False):
        net = MedSemDeIDNet(DeidNetConfig(image_size=SIZE, widths=(8, 16, 16), medical=asdict(medical.config),
                                          donors=len(donors), use_enc_med=use_enc_med), donors)
        net.medical.load_state_dict(medical.state_dict())
        torch.nn.init.constant_(net.head.bias[3:], 20.0)  # the gate open wherever it is allowed
        outputs[use_enc_med] = MedSemDeID(net).deidentify_crops(original[None], [derive_model_key("pw")])[0]
    band = (slice(top + 2, end - 2), slice(2, SIZE - 2))
    chin = (slice(round(0.9 * SIZE), SIZE), slice(None))
    assert np.abs(outputs[True][band].astype(int) - original[band]).mean() < 2  # the whole "lesion" kept
    assert np.abs(outputs[True][chin].astype(int) - original[chin]).mean() > 5  # beyond it, replaced
    assert np.abs(outputs[False][band].astype(int) - original[band]).mean() > 5  # the ablation keeps nothing


def test_a_batch_under_one_password_runs_the_kdf_once(model, monkeypatch):
    from medeid.models.deid import api

    calls = []
    original = api.derive_model_key
    monkeypatch.setattr(api, "derive_model_key", lambda p, dim: calls.append(1) or original(p, dim))
    model.deidentify(faces(3), "one password")
    assert len(calls) == 1
    model.deidentify(faces(3), ["a", "b", "a"])
    assert len(calls) == 3


def test_every_face_of_a_photo_is_replaced_and_its_seals_restore_them_in_reverse(model):
    """Two overlapping aligned faces in one photo: each replaced, each sealed outside the pixels
    (as JPEG outputs need), and recovery with the seals gives back the photo."""
    big = photo(200, 260, seed=5)
    first, second = arcface_dst * 1.2 + np.array([20.0, 40.0]), arcface_dst * 1.2 + np.array([90.0, 50.0])
    out, seals = model.deidentify_faces(big, "pw", [first, second])
    assert len(seals) == 2 and all(seals)
    for marks in (first, second):
        inside = paste_weight(big.shape, face_crop(big, SIZE, marks)[1]) >= 1
        assert psnr(out[inside], big[inside]) < 25  # both faces changed
    untouched = paste_weight(big.shape, face_crop(big, SIZE, first)[1]) + paste_weight(
        big.shape, face_crop(big, SIZE, second)[1]) == 0
    np.testing.assert_array_equal(out[untouched], big[untouched])
    restored, status = model.recover_faces(out, "pw", seals)  # the seals hold where each face was
    assert status == RECOVERED and psnr(restored, big) >= 30
    same, status = model.recover_faces(out, "a wrong password", seals)
    assert status == WRONG_PASSWORD and np.array_equal(same, out)
    assert np.array_equal(model.deidentify_faces(big, "pw", [first, second])[0], out)  # deterministic


def test_a_key_chooses_among_as_many_donors_as_the_model_says(model):
    """New models choose among the whole bank (skin tone identifies); older ones among the nearest."""
    from dataclasses import replace

    from medeid.models.deid.model import skin_tone

    photo_ = torch.from_numpy(faces(1)[0][None])
    every = model.net.donor_choices(photo_)[0]
    assert len(every) == len(model.net.donors), "without the field: min(DONOR_CHOICES, bank)"
    narrow = MedSemDeIDNet(replace(model.net.config, donor_choices=2), model.net.donors)
    nearest = narrow.donor_choices(photo_)[0]
    distance = torch.cdist(skin_tone(photo_), model.net.donor_skin)[0]
    assert nearest.tolist() == distance.argsort()[:2].tolist()


def test_the_head_around_a_face_is_blurred_when_asked_and_the_seal_restores_it(model):
    """Real photos: hair and the head's outline reach past the crop. `surround` blurs the crop's square
    grown that many times (not beyond it), and the seal holds that region too."""
    big = photo(240, 260, seed=6)
    marks = arcface_dst * 0.9 + np.array([80.0, 70.0])
    where = face_crop(big, SIZE, marks)[1]
    plain, _ = model.deidentify_faces(big, "pw", [marks])
    out, seals = model.deidentify_faces(big, "pw", [marks], surround=1.8)
    face = paste_weight(big.shape, where) > 0
    ring = (paste_weight(big.shape, grown(where, 1.8)) >= 1) & ~face
    beyond = paste_weight(big.shape, grown(where, 1.8)) + paste_weight(big.shape, where) == 0
    assert ring.sum() > face.sum()  # the head around the face is the larger part
    np.testing.assert_array_equal(out[beyond], big[beyond])
    detail = lambda image: np.abs(image.astype(float) - cv2.GaussianBlur(image, (0, 0), 2))[ring].mean()  # noqa: E731
    assert detail(out) < 0.3 * detail(big) and np.array_equal(plain[ring], big[ring])  # blurred only when asked
    inside = paste_weight(big.shape, where) >= 1
    np.testing.assert_array_equal(out[inside], plain[inside])  # the face itself is the same new face
    restored, status = model.recover_faces(out, "pw", seals)
    assert status == RECOVERED and np.array_equal(restored, big)
