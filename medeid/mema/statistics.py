"""The real cohort's statistics that MeMa's conditions are drawn from: P(age), P(sex), P(disease)
and, per disease, the joint table of its presentations (laterality, severity, findings).

Counted per patient, not per photo: a patient photographed ten times is still one person.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import ray

from medeid import storage
from medeid.pipelines.synthetic_archive import METADATA

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


def _distribution(ds: ray.data.Dataset, column: str) -> dict[str, float]:
    counts = {r[column]: r["count()"] for r in ds.groupby(column).count().take_all()}
    total = sum(counts.values())
    return {k: counts[k] / total for k in sorted(counts)}


def cohort_statistics(archive_root: str, settings: storage.S3Settings | None = None) -> CohortStatistics:
    """Count the archive's patients with Ray Data: one row per patient, then the distributions."""
    fs, path = storage.filesystem(storage.join(archive_root, METADATA), settings)
    photos = ray.data.read_parquet(path, filesystem=fs, columns=["patient_id", "age", "sex", "disease",
                                                                  "laterality", "severity", "findings"])
    # One row per patient: every photo of a patient carries the same labels.
    patients = photos.map(_patient_row).groupby(["patient_id", "age_band", "sex", "disease", "presentation"]) \
        .count().materialize()
    duplicated = patients.groupby("patient_id").count().filter(lambda r: r["count()"] > 1).count()
    if duplicated:
        raise ValueError(f"{duplicated} patients have photos with different labels in {archive_root}")
    presentations = {}
    for row in patients.groupby(["disease", "presentation"]).count().take_all():
        presentations.setdefault(row["disease"], {})[row["presentation"]] = row["count()"]
    presentations = {d: {k: v / sum(table.values()) for k, v in sorted(table.items())}
                     for d, table in sorted(presentations.items())}
    return CohortStatistics(patients=patients.count(), p_age=_distribution(patients, "age_band"),
                            p_sex=_distribution(patients, "sex"), p_disease=_distribution(patients, "disease"),
                            presentations=presentations)


def total_variation(p: dict[str, float], q: dict[str, float]) -> float:
    """Total-variation distance between two distributions over named outcomes."""
    return 0.5 * sum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in set(p) | set(q))
