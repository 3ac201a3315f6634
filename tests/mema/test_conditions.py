"""Cohort statistics (Ray Data over the archive's metadata) and rich-condition sampling."""

import json

import numpy as np
import pytest

from medeid import storage
from medeid.mema.sampling import released_distributions, sample_conditions
from medeid.mema.statistics import CohortStatistics, age_band, cohort_statistics, total_variation
from medeid.pipelines.synthetic_archive import build_archive
from medeid.synth import make_patient


@pytest.fixture(scope="module")
def stats(ray_session, s3):
    storage.make_bucket("s3://mema-stats", s3.settings)
    root = build_archive("s3://mema-stats/archive", 30, 3, size=64, seed=12).root
    return cohort_statistics(root)


def test_statistics_count_patients_not_photos(stats):
    patients = [make_patient(12, i) for i in range(30)]
    assert stats.patients == 30
    for disease in {p.condition.disease for p in patients}:
        expected = sum(p.condition.disease == disease for p in patients) / 30
        assert stats.p_disease[disease] == pytest.approx(expected)
    assert stats.p_sex["female"] == pytest.approx(sum(p.sex == "female" for p in patients) / 30)
    bands = [age_band(p.age) for p in patients]
    assert stats.p_age == pytest.approx({b: bands.count(b) / 30 for b in set(bands)})
    for table in stats.presentations.values():
        assert sum(table.values()) == pytest.approx(1.0)


def test_statistics_round_trip(stats, tmp_path):
    stats.save(str(tmp_path / "stats.json"))
    assert CohortStatistics.load(str(tmp_path / "stats.json")) == stats


def test_sampling_is_stable_and_follows_the_cohort(stats):
    rows = sample_conditions(stats, 4000, seed=3)
    assert rows[:50] == sample_conditions(stats, 50, seed=3)  # a longer run extends a shorter one
    assert rows[100:110] == sample_conditions(stats, 10, seed=3, start=100)
    assert sample_conditions(stats, 50, seed=4) != rows[:50]
    assert len({r["sample_id"] for r in rows}) == 4000
    released = released_distributions(rows)
    for name in ("p_age", "p_sex", "p_disease"):
        assert total_variation(released[name], getattr(stats, name)) < 0.03
    presentations = {(r["disease"], r["laterality"], r["severity"], tuple(r["findings"])) for r in rows}
    known = set()
    for disease, table in stats.presentations.items():
        for key in table:
            laterality, severity, findings = json.loads(key)
            known.add((disease, laterality, severity, tuple(findings)))
    assert presentations <= known  # only presentations real patients have


def test_requested_mix(stats):
    disease = sorted(stats.presentations)[0]
    rows = sample_conditions(stats, 200, seed=1, disease_mix={disease: 1.0})
    assert {r["disease"] for r in rows} == {disease}
    with pytest.raises(ValueError, match="no patient in the cohort"):
        sample_conditions(stats, 5, disease_mix={"no_such_disease": 1.0})
    assert np.isclose(total_variation({"a": 1.0}, {"b": 1.0}), 1.0)
