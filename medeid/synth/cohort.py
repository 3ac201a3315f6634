"""A synthetic hospital cohort: patients with age, sex and one eye condition, photographed K times.

Everything is derived from integer seeds, so a photo row (a plain dict that Ray Data can carry)
is enough to re-render its pixels anywhere: `render_row(row, size)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medeid.synth.conditions import (
    CONJUNCTIVAL_REDNESS,
    DISEASES,
    HEALTHY,
    PERIOCULAR_TUMOUR,
    PTOSIS,
    STRABISMUS,
    THYROID_EYE_DISEASE,
    Condition,
    sample_condition,
)
from medeid.synth.identity import Identity, sample_identity
from medeid.synth.nuisance import Nuisance, sample_nuisance
from medeid.synth.render import Rendered, render

# An eye clinic's case mix, and the age each disease tends to present at (mean, sd in years).
DEFAULT_DISEASE_MIX = {
    HEALTHY: 0.25,
    PTOSIS: 0.18,
    THYROID_EYE_DISEASE: 0.14,
    STRABISMUS: 0.15,
    CONJUNCTIVAL_REDNESS: 0.16,
    PERIOCULAR_TUMOUR: 0.12,
}
AGE_BY_DISEASE = {
    HEALTHY: (40, 18),
    PTOSIS: (62, 14),
    THYROID_EYE_DISEASE: (45, 12),
    STRABISMUS: (22, 14),
    CONJUNCTIVAL_REDNESS: (42, 18),
    PERIOCULAR_TUMOUR: (68, 11),
}
FEMALE_SHARE = {HEALTHY: 0.5, PTOSIS: 0.55, THYROID_EYE_DISEASE: 0.78, STRABISMUS: 0.5,
                CONJUNCTIVAL_REDNESS: 0.52, PERIOCULAR_TUMOUR: 0.45}
MIN_AGE, MAX_AGE = 3, 95
PHOTO_FORMATS = ("jpeg", "png")


@dataclass(frozen=True)
class Patient:
    patient_id: str
    age: int
    sex: str
    identity: Identity
    condition: Condition


def patient_id(index: int) -> str:
    return f"P{index:06d}"


def make_patient(cohort_seed: int, index: int, disease_mix: dict[str, float] | None = None) -> Patient:
    """The `index`-th patient of the cohort seeded with `cohort_seed`."""
    mix = disease_mix or DEFAULT_DISEASE_MIX
    unknown = set(mix) - set(DISEASES)
    if unknown:
        raise ValueError(f"unknown diseases in the mix: {sorted(unknown)}")
    rng = np.random.default_rng([cohort_seed, index])
    names = list(mix)
    p = np.array([mix[n] for n in names], dtype=float)
    disease = names[int(rng.choice(len(names), p=p / p.sum()))]
    mean, sd = AGE_BY_DISEASE[disease]
    age = int(np.clip(round(rng.normal(mean, sd)), MIN_AGE, MAX_AGE))
    sex = "female" if rng.uniform() < FEMALE_SHARE[disease] else "male"
    return _patient(cohort_seed, index, age, sex, disease)


def _patient(cohort_seed: int, index: int, age: int, sex: str, disease: str) -> Patient:
    # Identity and condition have their own streams, so a row's labels are enough to rebuild them.
    return Patient(
        patient_id=patient_id(index),
        age=age,
        sex=sex,
        identity=sample_identity(np.random.default_rng([cohort_seed, index, 1]), age, sex),
        condition=sample_condition(np.random.default_rng([cohort_seed, index, 2]), disease),
    )


def photo_rows(patient: Patient, cohort_seed: int, index: int, photos: int) -> list[dict]:
    """One row per photo of `patient`: labels, file format and the seeds that render it."""
    rows = []
    for k in range(photos):
        rng = np.random.default_rng([cohort_seed, index, 3, k])
        rows.append({
            "photo_id": f"{patient.patient_id}_{k:02d}",
            "patient_id": patient.patient_id,
            "patient_index": index,
            "photo_index": k,
            "cohort_seed": cohort_seed,
            "age": patient.age,
            "sex": patient.sex,
            "disease": patient.condition.disease,
            "laterality": patient.condition.laterality,
            "severity": patient.condition.severity,
            "findings": patient.condition.findings,
            "format": PHOTO_FORMATS[int(rng.integers(len(PHOTO_FORMATS)))],
        })
    return rows


def cohort_rows(n_patients: int, photos_per_patient: int, seed: int = 0,
                disease_mix: dict[str, float] | None = None) -> list[dict]:
    """Photo rows of a whole cohort, patient by patient."""
    if n_patients < 1 or photos_per_patient < 1:
        raise ValueError("a cohort needs at least one patient and one photo per patient")
    rows = []
    for i in range(n_patients):
        rows += photo_rows(make_patient(seed, i, disease_mix), seed, i, photos_per_patient)
    return rows


def photo_nuisance(row: dict) -> Nuisance:
    return sample_nuisance(np.random.default_rng([row["cohort_seed"], row["patient_index"], 4, row["photo_index"]]))


def patient_from_row(row: dict) -> Patient:
    return _patient(int(row["cohort_seed"]), int(row["patient_index"]), int(row["age"]), str(row["sex"]),
                    str(row["disease"]))


def render_row(row: dict, size: int) -> Rendered:
    """The pixels of a photo row: the same row always gives the same image."""
    patient = patient_from_row(row)
    return render(patient.identity, patient.condition, photo_nuisance(row), size)


