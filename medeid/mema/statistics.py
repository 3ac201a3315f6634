"""The real cohort's statistics that MeMa's conditions are drawn from: P(age), P(sex), P(disease)
and, per disease, the joint table of its presentations (laterality, severity, findings).

Counted per patient, not per photo: a patient photographed ten times is still one person.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass

from medeid import storage

AGE_BANDS = (0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 120)  # band i is [AGE_BANDS[i], AGE_BANDS[i+1])
FINDINGS_SEPARATOR = "; "


def age_band(age: int) -> str:
    for lo, hi in zip(AGE_BANDS, AGE_BANDS[1:]):
        if lo <= age < hi:
            return f"{lo}-{hi - 1}"
    raise ValueError(f"age {age} is outside {AGE_BANDS[0]}-{AGE_BANDS[-1] - 1}")


def presentation_key(laterality: str, severity: int, findings: list[str]) -> str:
    return json.dumps([laterality, int(severity), list(findings)])


@dataclass(frozen=True)
class CohortStatistics:
    patients: int
    p_age: dict[str, float]  # age band -> probability
    p_sex: dict[str, float]
    p_disease: dict[str, float]
    presentations: dict[str, dict[str, float]]  # disease -> presentation_key -> P(presentation | disease)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "CohortStatistics":
        return cls(**json.loads(text))

    def save(self, uri: str, settings: storage.S3Settings | None = None) -> None:
        storage.write_bytes(uri, self.to_json().encode(), settings)

    @classmethod
    def load(cls, uri: str, settings: storage.S3Settings | None = None) -> "CohortStatistics":
        return cls.from_json(storage.read_bytes(uri, settings).decode())


def _patient_row(row: dict) -> dict:
    return {"patient_id": row["patient_id"], "age_band": age_band(int(row["age"])), "sex": row["sex"],
            "disease": row["disease"],
            "presentation": presentation_key(row["laterality"], row["severity"], list(row["findings"]))}


def share(values: list) -> dict[str, float]:
    """Each value's share of `values`, by value."""
    counts = Counter(values)
    return {k: counts[k] / len(values) for k in sorted(counts)}


def cohort_statistics(archive_root: str, settings: storage.S3Settings | None = None) -> CohortStatistics:
    """Count the archive's patients: one row per patient, then the distributions.

    The metadata table is small beside the photos (a million photos: tens of MB), so it is read whole
    and counted here. Ray Data's group-bys each start a shuffle of 200 partitions, whatever the size:
    ~40 s for the seven this takes on two cores, on 90 photos as on a million."""
    from medeid.pipelines.synthetic_archive import read_metadata  # Ray: only where an archive is read

    photos = read_metadata(archive_root, settings).select(["patient_id", "age", "sex", "disease", "laterality",
                                                          "severity", "findings"])
    labels: dict[str, tuple] = {}  # patient -> (age band, sex, disease, presentation)
    inconsistent = set()
    for row in map(_patient_row, photos.to_pylist()):
        key = (row["age_band"], row["sex"], row["disease"], row["presentation"])
        if labels.setdefault(row["patient_id"], key) != key:
            inconsistent.add(row["patient_id"])
    if inconsistent:  # every photo of a patient carries the same labels
        raise ValueError(f"{len(inconsistent)} patients have photos with different labels in {archive_root}")
    presentations: dict[str, Counter] = {}
    for _, _, disease, presentation in labels.values():
        presentations.setdefault(disease, Counter())[presentation] += 1
    presentations = {d: {k: v / sum(table.values()) for k, v in sorted(table.items())}
                     for d, table in sorted(presentations.items())}
    bands, sexes, diseases, _ = zip(*labels.values()) if labels else ((), (), (), ())
    return CohortStatistics(patients=len(labels), p_age=share(list(bands)), p_sex=share(list(sexes)),
                            p_disease=share(list(diseases)), presentations=presentations)


def total_variation(p: dict[str, float], q: dict[str, float]) -> float:
    """Total-variation distance between two distributions over named outcomes."""
    return 0.5 * sum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in set(p) | set(q))
