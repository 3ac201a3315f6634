"""The cohort: labels follow the case mix, ages follow the diseases, and rows are reproducible."""

import numpy as np
import pytest

from medeid.synth import cohort_rows, make_patient
from medeid.synth.cohort import DEFAULT_DISEASE_MIX
from medeid.synth.conditions import PERIOCULAR_TUMOUR, STRABISMUS, THYROID_EYE_DISEASE


def test_case_mix_and_demographics_follow_the_clinic():
    patients = [make_patient(0, i) for i in range(3000)]
    diseases = [p.condition.disease for p in patients]
    observed = np.array([diseases.count(d) / len(diseases) for d in DEFAULT_DISEASE_MIX])
    expected = np.array(list(DEFAULT_DISEASE_MIX.values()))
    assert 0.5 * np.abs(observed - expected).sum() < 0.03  # total-variation distance

    def mean_age(disease):
        return np.mean([p.age for p in patients if p.condition.disease == disease])

    assert mean_age(PERIOCULAR_TUMOUR) > mean_age(STRABISMUS) + 25
    ted = [p.sex for p in patients if p.condition.disease == THYROID_EYE_DISEASE]
    assert ted.count("female") / len(ted) > 0.65


def test_requested_mix_is_honoured():
    patients = [make_patient(1, i, {STRABISMUS: 1.0}) for i in range(50)]
    assert {p.condition.disease for p in patients} == {STRABISMUS}
    with pytest.raises(ValueError, match="unknown diseases"):
        make_patient(1, 0, {"flu": 1.0})


def test_rows_carry_labels_and_both_formats():
    rows = cohort_rows(20, 3, seed=4)
    assert len(rows) == 60 and len({r["photo_id"] for r in rows}) == 60
    assert {r["format"] for r in rows} == {"jpeg", "png"}
    per_patient = {}
    for r in rows:
        per_patient.setdefault(r["patient_id"], set()).add((r["age"], r["sex"], r["disease"], r["severity"]))
    assert all(len(labels) == 1 for labels in per_patient.values())  # one person, one label set
    assert cohort_rows(20, 3, seed=5) != rows
