"""Rich-condition sampling: the rows MeMa generates from, drawn from the real cohort's statistics.

Row i of a run depends only on (seed, i), so a re-run draws the same rows and a longer run extends
a shorter one; each row carries a stable sample id and its own generation seed.
"""

from __future__ import annotations

import json

import numpy as np

from medeid.mema.statistics import CohortStatistics, age_band
from medeid.synth.cohort import MAX_AGE, MIN_AGE


def _draw(rng: np.random.Generator, distribution: dict[str, float]) -> str:
    names = sorted(distribution)
    p = np.array([distribution[n] for n in names], dtype=float)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def sample_conditions(stats: CohortStatistics, n: int, seed: int = 0, disease_mix: dict[str, float] | None = None,
                      start: int = 0) -> list[dict]:
    """Rows `start` .. `start + n - 1`: age, sex and disease from the cohort (or `disease_mix`), and a
    presentation (laterality, severity, findings) from the cohort's table for that disease."""
    mix = disease_mix or stats.p_disease
    missing = sorted(d for d, p in mix.items() if p > 0 and d not in stats.presentations)
    if missing:
        raise ValueError(f"no patient in the cohort has {missing}: there is no presentation to draw from")
    rows = []
    for i in range(start, start + n):
        rng = np.random.default_rng([seed, i])
        lo, hi = (int(v) for v in _draw(rng, stats.p_age).split("-"))
        disease = _draw(rng, mix)
        laterality, severity, findings = json.loads(_draw(rng, stats.presentations[disease]))
        rows.append({
            "sample_id": f"mema-{seed}-{i:08d}",
            "seed": int(rng.integers(0, 2**31 - 1)),
            "age": int(np.clip(rng.integers(lo, hi + 1), MIN_AGE, MAX_AGE)),
            "sex": _draw(rng, stats.p_sex),
            "disease": disease,
            "laterality": laterality,
            "severity": int(severity),
            "findings": findings,
        })
    return rows


def released_distributions(rows: list[dict]) -> dict[str, dict[str, float]]:
    """P(age band), P(sex), P(disease) of condition rows, to compare with the cohort's."""

    def share(values: list[str]) -> dict[str, float]:
        return {v: values.count(v) / len(values) for v in sorted(set(values))}

    return {"p_age": share([age_band(r["age"]) for r in rows]), "p_sex": share([r["sex"] for r in rows]),
            "p_disease": share([r["disease"] for r in rows])}
