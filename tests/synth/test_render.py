"""The renderer: deterministic pixels, exact lesion masks, visible conditions, tellable identities."""

import numpy as np
import pytest
from PIL import Image

from medeid.synth import (
    DISEASES, Condition, Nuisance, cohort_rows, render, render_row, sample_condition, sample_identity,
    sample_nuisance,
)
from medeid.synth.conditions import HEALTHY, PERIOCULAR_TUMOUR, TUMOUR_SITES

SIZE = 128
# With the neutral pose the eyes sit in this band of rows; the mouth and chin below it.
PERIOCULAR_ROWS = slice(int(SIZE * 0.25), int(SIZE * 0.6))
LOWER_FACE_ROWS = slice(int(SIZE * 0.7), SIZE)


def dilate(mask: np.ndarray, steps: int) -> np.ndarray:
    out = mask.copy()
    for _ in range(steps):
        padded = np.pad(out, 1)
        out = np.max([padded[1 + dy:1 + dy + mask.shape[0], 1 + dx:1 + dx + mask.shape[1]]
                      for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=0)
    return out


def presentation(disease: str, severity: int, laterality: str, seed: int = 5) -> Condition:
    drawn = sample_condition(np.random.default_rng(seed), disease)
    return Condition(disease=disease, laterality=laterality, severity=severity, variant=drawn.variant,
                     tumour_site=drawn.tumour_site, tumour_angle=drawn.tumour_angle,
                     pattern_seed=drawn.pattern_seed)


@pytest.fixture(scope="module")
def person():
    return sample_identity(np.random.default_rng(11), 52, "female")


def test_same_inputs_give_same_pixels(person):
    nuisance = sample_nuisance(np.random.default_rng(3))
    condition = presentation(PERIOCULAR_TUMOUR, 2, "left")
    first, second = render(person, condition, nuisance, SIZE), render(person, condition, nuisance, SIZE)
    assert np.array_equal(first.image, second.image)
    assert np.array_equal(first.lesion_mask, second.lesion_mask)
    other = render(person, condition, sample_nuisance(np.random.default_rng(4)), SIZE)
    assert np.abs(other.image.astype(int) - first.image).mean() > 5  # another photo of the same person


def test_photo_rows_rerender_identically():
    rows = cohort_rows(3, 2, seed=9)
    again = cohort_rows(3, 2, seed=9)
    assert rows == again
    for row in rows:
        assert np.array_equal(render_row(row, 64).image, render_row(dict(row), 64).image)


@pytest.mark.parametrize("size", [64, 96, 128, 256])
def test_every_supported_size(person, size):
    rendered = render(person, Condition(), Nuisance(), size)
    assert rendered.image.shape == (size, size, 3) and rendered.image.dtype == np.uint8
    assert rendered.lesion_mask.shape == (size, size) and not rendered.lesion_mask.any()


@pytest.mark.parametrize("size", [32, 512])
def test_unsupported_size_is_refused(person, size):
    with pytest.raises(ValueError, match="between 64 and 256"):
        render(person, Condition(), Nuisance(), size)


@pytest.mark.parametrize("site", TUMOUR_SITES)
@pytest.mark.parametrize("severity", [1, 3])
def test_mask_covers_the_tumour_and_only_the_tumour(person, site, severity):
    tumour = Condition(disease=PERIOCULAR_TUMOUR, laterality="right", severity=severity, tumour_site=site,
                       pattern_seed=21)
    for nuisance, margin in ((Nuisance(), 1), (sample_nuisance(np.random.default_rng(8)), 2)):
        with_lesion = render(person, tumour, nuisance, SIZE)
        without = render(person, Condition(), nuisance, SIZE)
        changed = np.abs(with_lesion.image.astype(int) - without.image).max(axis=2) > 6
        mask = with_lesion.lesion_mask
        assert mask.sum() >= 12
        assert changed[mask].mean() > 0.95  # the mask is on the lesion...
        assert not (changed & ~dilate(mask, margin)).any()  # ...and nothing else changed beyond its edge
        # The patient's right eye is on the image's left.
        assert np.nonzero(mask)[1].mean() < SIZE // 2


@pytest.mark.parametrize("disease", [d for d in DISEASES if d != HEALTHY])
@pytest.mark.parametrize("severity", [1, 2, 3])
def test_each_condition_shows_around_the_affected_eye_only(person, disease, severity):
    healthy = render(person, Condition(), Nuisance(), SIZE).image.astype(int)
    sick = render(person, presentation(disease, severity, "left"), Nuisance(), SIZE).image.astype(int)
    diff = np.abs(sick - healthy).max(axis=2)
    assert (diff[PERIOCULAR_ROWS] > 30).sum() >= 15, "the condition is hard to see"
    assert diff[LOWER_FACE_ROWS].max() == 0, "the condition leaked outside the periocular region"
    # The patient's left eye is on the image's right; around the other eye almost nothing moves.
    assert diff[:, :SIZE // 2].sum() < 0.01 * diff[:, SIZE // 2:].sum()


@pytest.mark.parametrize("disease", [d for d in DISEASES if d != HEALTHY])
def test_severity_grows_the_change(person, disease):
    healthy = render(person, Condition(), Nuisance(), SIZE).image.astype(int)
    change = [np.abs(render(person, presentation(disease, s, "right"), Nuisance(), SIZE).image - healthy).sum()
              for s in (1, 2, 3)]
    assert change[0] < change[2]


def _pixel_embedding(image: np.ndarray) -> np.ndarray:
    small = np.asarray(Image.fromarray(image).resize((16, 16), Image.BILINEAR), dtype=np.float32).ravel()
    small -= small.mean()
    return small / np.linalg.norm(small)


def test_identities_are_told_apart_by_a_pixel_embedding():
    patients = 100
    rows = cohort_rows(patients, 2, seed=3)
    gallery = np.stack([_pixel_embedding(render_row(r, 64).image) for r in rows if r["photo_index"] == 0])
    probes = np.stack([_pixel_embedding(render_row(r, 64).image) for r in rows if r["photo_index"] == 1])
    top1 = ((probes @ gallery.T).argmax(axis=1) == np.arange(patients)).mean()
    # Chance is 1 %; photos differ in pose, light, expression, background and camera noise.
    assert top1 >= 0.2, f"top-1 {top1:.2f}"


@pytest.mark.parametrize("bad", [
    dict(disease="flu"),
    dict(disease=HEALTHY, severity=2),
    dict(disease="strabismus", laterality="bilateral", severity=1, variant="esotropia"),
    dict(disease="ptosis", laterality="none", severity=1),
    dict(disease="ptosis", laterality="left", severity=0),
])
def test_impossible_conditions_are_refused(bad):
    with pytest.raises(ValueError):
        Condition(**bad)


def test_drawing_the_eyes_on_a_window_changes_no_pixel(monkeypatch):
    """The eyes are drawn on a window of the canvas around them (`eyes.eye_window`) for speed: the same
    photos, masks and subject maps as drawing them on the whole canvas, at every severity, pose and size."""
    from medeid.synth import eyes

    rows = cohort_rows(60, 2, seed=11)[::3]
    windowed = [render_row(r, size) for r in rows for size in (64, 160)]
    monkeypatch.setattr(eyes, "eye_window", lambda canvas, identity, eye: canvas)
    whole = [render_row(r, size) for r in rows for size in (64, 160)]
    for a, b in zip(windowed, whole):
        assert np.array_equal(a.image, b.image) and np.array_equal(a.lesion_mask, b.lesion_mask)
        assert np.array_equal(a.subject, b.subject)
