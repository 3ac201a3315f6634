"""The numbers of MeMa's dataset card and its quality bars (DESIGN §3), from a build's tables."""

from __future__ import annotations

from collections import Counter

import pyarrow as pa

from medeid.evaluate.attacks import COPY_MAD
from medeid.mema.card_tables import STAGES, MeMaTables
from medeid.mema.statistics import CohortStatistics, age_band, share, total_variation

TV_BAR = 0.05
AGREEMENT_BAR = 0.90
# Train on MeMa, test on real: shares of the real-trained model's figures (the seed reports ~86.7 %
# classification and Dice ~0.68 for models trained on MeMa).
TSTR_DISEASE_BAR, TSTR_DICE_BAR = 0.85, 0.75
# Released faces lie within twice the distance between two halves of the real patients (evaluator
# embeddings, `mema/face_distance.py`): faces, not smudges the recognisers cannot match.
FACE_DISTANCE_BAR = 2.0
TOP_REASONS = 10
MEASURES = ("age", "sex", "disease")
CLOSEST = 6  # released images shown, and listed, beside their nearest real photo by each attacker
SLACK = 1e-9  # so that a figure equal to its bar is not failed by float rounding


def _distributions(table: pa.Table) -> dict[str, dict[str, float]]:
    """P(age band), P(sex), P(disease) of condition-carrying rows; empty dicts for no rows."""
    return {"age": share([age_band(int(a)) for a in table["age"].to_pylist()]),
            "sex": share(table["sex"].to_pylist()), "disease": share(table["disease"].to_pylist())}


def _cohort_distributions(cohort: CohortStatistics | None) -> dict[str, dict[str, float]] | None:
    if cohort is None:
        return None
    return {"age": dict(cohort.p_age), "sex": dict(cohort.p_sex), "disease": dict(cohort.p_disease)}


def _tv(released: dict, reference: dict | None, n_released: int) -> dict[str, float | None]:
    """TV per measure; None where there is nothing to compare (no released rows, no reference)."""
    if reference is None or n_released == 0:
        return {m: None for m in MEASURES}
    return {m: total_variation(released[m], reference[m]) for m in MEASURES}


def _accounting(t: MeMaTables) -> dict:
    """Checks that make `sampled = released + rejected` mean something: every attempt recorded once,
    attempt numbers of each sample id without gaps, only requested ids, every rejection explained."""
    released = list(zip(t.released["sample_id"].to_pylist(), t.released["attempt"].to_pylist()))
    rejected = list(zip(t.rejections["sample_id"].to_pylist(), t.rejections["attempt"].to_pylist()))
    attempts = released + rejected
    attempts_by_id: dict[str, set[int]] = {}
    for sample_id, attempt in attempts:
        attempts_by_id.setdefault(sample_id, set()).add(int(attempt))
    requested = set(t.conditions["sample_id"].to_pylist())
    unexplained = sum(not (stage or "").strip() or not (reason or "").strip() for stage, reason in
                      zip(t.rejections["stage"].to_pylist(), t.rejections["reason"].to_pylist()))
    return {
        "duplicate_attempts": len(attempts) - len(set(attempts)),
        # An attempt number skipped means an attempt left no row: neither released nor rejected.
        "missing_attempts": sum(max(seen) + 1 - len(seen) for seen in attempts_by_id.values()),
        "released_twice": len(released) - len({sample_id for sample_id, _ in released}),
        "unrequested_sample_ids": len(set(attempts_by_id) - requested),
        "rejections_without_stage_or_reason": unexplained,
        "never_attempted": len(requested - set(attempts_by_id)),  # reported; not an accounting error
    }


def _funnel(sampled: int, rejected_by_stage: dict[str, int]) -> list[dict]:
    """Attempts entering, rejected by and passing each stage, in the order the build applies them."""
    rows, entered = [], sampled
    for stage, rejected in rejected_by_stage.items():
        passed = entered - rejected
        rows.append({"stage": stage, "entered": entered, "rejected": rejected, "passed": passed,
                     "pass_rate": passed / entered if entered else None})
        entered = passed
    return rows


def _identity_threshold(t: MeMaTables) -> float | None:
    """The identity filter's threshold as stored in the rows (the lowest, if a build changed it)."""
    stored = t.released["identity_threshold"].to_pylist() or [
        v for s, v in zip(t.rejections["stage"].to_pylist(), t.rejections["threshold"].to_pylist())
        if s == "identity" and v is not None]
    return min(stored) if stored else None


def _audit_figures(t: MeMaTables) -> dict | None:
    if t.audit is None:
        return None
    similarity = t.audit["evaluator_similarity"].to_pylist()
    threshold = t.audit["evaluator_threshold"].to_pylist()
    audited = set(t.audit["sample_id"].to_pylist())
    return {
        "audited": len(audited),
        "unaudited": len(set(t.released["sample_id"].to_pylist()) - audited),
        "max_similarity": max(similarity) if similarity else None,
        "threshold": min(threshold) if threshold else None,
        "matches": sum(s >= th for s, th in zip(similarity, threshold)),
    }


def _attack_figures(t: MeMaTables) -> dict | None:
    """The eye-band attackers' verdicts (`medeid.mema.attack_audit`), and the closest cases of each."""
    if t.attacks is None:
        return None
    a, auditor = t.attacks.to_pydict(), t.auditor or {}
    audited = set(a["sample_id"])
    periocular = sorted(zip(a["periocular_similarity"], a["periocular_threshold"], a["sample_id"]), reverse=True)
    pixel = sorted(zip(a["pixel_distance"], a["pixel_copy"], a["sample_id"]))
    return {
        "audited": len(audited),
        "unaudited": len(set(t.released["sample_id"].to_pylist()) - audited),
        "periocular": {
            "matches": sum(s >= th for s, th, _ in periocular),
            "max_similarity": periocular[0][0] if periocular else None,
            "threshold": min(a["periocular_threshold"]) if periocular else auditor.get("threshold"),
            "closest": [{"sample_id": i, "similarity": s, "match": s >= th} for s, th, i in periocular[:CLOSEST]],
            # How strong the auditor is on the real photos it learnt from.
            **{k: auditor.get(k) for k in ("far", "top1_others", "chance", "found_at_threshold", "pair_threshold",
                                           "tar", "photos", "patients", "epochs")},
        },
        "pixel": {
            "copies": sum(copy for _, copy, _ in pixel),
            "min_distance": pixel[0][0] if pixel else None,
            "copy_mad": auditor.get("copy_mad", COPY_MAD),
            "closest": [{"sample_id": i, "distance": d, "copy": copy} for d, copy, i in pixel[:CLOSEST]],
        },
    }


def figures_of(t: MeMaTables) -> dict:
    released, rejected = t.released.num_rows, t.rejections.num_rows
    stages = t.rejections["stage"].to_pylist()
    by_stage = Counter(stages)
    # Every known stage is listed, rejected or not; a stage the card does not know comes after them.
    rejected_by_stage = {s: by_stage.get(s, 0) for s in STAGES}
    rejected_by_stage.update({s: by_stage[s] for s in sorted(set(by_stage) - set(STAGES), key=str)})
    sampled = released + rejected
    funnel = _funnel(sampled, rejected_by_stage)

    requested_dist, released_dist = _distributions(t.conditions), _distributions(t.released)
    cohort_dist = _cohort_distributions(t.cohort)
    diseases, predicted = t.released["disease"].to_pylist(), t.released["predicted_disease"].to_pylist()
    similarity = t.released["nearest_similarity"].to_pylist()
    thresholds = t.released["identity_threshold"].to_pylist()
    figures = {
        "requested": t.conditions.num_rows,
        "released": released,
        "rejected": rejected,
        "sampled": sampled,
        "unfilled": len(set(t.conditions["sample_id"].to_pylist()) - set(t.released["sample_id"].to_pylist())),
        "rejected_by_stage": rejected_by_stage,
        "rejected_by_reason": dict(Counter(t.rejections["reason"].to_pylist()).most_common(TOP_REASONS)),
        "funnel": funnel,
        "per_stage_pass_rate": {row["stage"]: row["pass_rate"] for row in funnel},
        "mema_seg": sum(t.released["has_mask"].to_pylist()),
        "released_by_disease": dict(sorted(Counter(diseases).items())),
        "distributions": {m: {"requested": requested_dist[m], "released": released_dist[m],
                              "cohort": cohort_dist[m] if cohort_dist else None} for m in MEASURES},
        "tv": _tv(released_dist, requested_dist, released),
        "tv_vs_cohort": _tv(released_dist, cohort_dist, released),
        "plausibility_agreement": (sum(d == p for d, p in zip(diseases, predicted)) / released) if released else None,
        "max_nearest_similarity": max(similarity) if similarity else None,
        "identity_threshold": _identity_threshold(t),
        # Each row is compared with the threshold stored in it, which is the match threshold minus
        # a safety margin: no margin is added back, so an image inside the margin counts as a match.
        "matches_pipeline": sum(s >= th for s, th in zip(similarity, thresholds)),
        "audit": _audit_figures(t),
        "attacks": _attack_figures(t),
        "tstr": t.tstr,
        "face_distance": t.face_distance,
        "accounting": _accounting(t),
    }
    figures["bars"] = _bars(figures)
    return figures


def _bars(f: dict) -> list[dict]:
    """The DESIGN quality bars of MeMa: measure, bar, value, passed, and a line saying how."""
    return [_privacy_bar(f), _periocular_bar(f), _pixel_bar(f), _face_distance_bar(f), _agreement_bar(f),
            *(_tv_bar(f, m) for m in MEASURES), _accounting_bar(f),
            _tstr_bar(f, "disease_accuracy", "disease accuracy", "disease_ratio_bar", "disease_passed"),
            _tstr_bar(f, "tumour_dice", "lesion Dice", "dice_ratio_bar", "dice_passed")]


def _privacy_bar(f: dict) -> dict:
    audit, released = f["audit"], f["released"]
    pipeline = (f"pipeline recogniser: {f['matches_pipeline']} of {released} "
                f"(max similarity {num(f['max_nearest_similarity'])}, threshold {num(f['identity_threshold'])})")
    if audit is None:
        evaluator = "evaluator recogniser: audit not run"
    else:
        evaluator = (f"evaluator recogniser: {audit['matches']} of {audit['audited']} audited, {audit['unaudited']} "
                     f"not audited (max similarity {num(audit['max_similarity'])}, "
                     f"threshold {num(audit['threshold'])})")
    # Both recognisers must have looked at every released image; nothing released needs no audit.
    evaluator_clear = released == 0 or (audit is not None and audit["matches"] == 0 and audit["unaudited"] == 0)
    return {"measure": "released images whose nearest real patient is a match (either recogniser)", "bar": "= 0",
            "value": f["matches_pipeline"] + (audit["matches"] if audit else 0),
            "passed": f["matches_pipeline"] == 0 and evaluator_clear, "detail": f"{pipeline}; {evaluator}"}


def _attack_bar(f: dict, attacker: str, found: str, measure: str, detail) -> dict:
    """An eye-band attacker's bar: nothing found, and every released image looked at."""
    attacks, released = f["attacks"], f["released"]
    value = None if attacks is None else attacks[attacker][found]
    clear = released == 0 or (attacks is not None and value == 0 and attacks["unaudited"] == 0)
    return {"measure": measure, "bar": "= 0", "value": value, "passed": clear,
            "detail": "attack audit not run" if attacks is None else
            f"{value} of {attacks['audited']} audited, {attacks['unaudited']} not audited; {detail(attacks[attacker])}"}


def _periocular_bar(f: dict) -> dict:
    def detail(p: dict) -> str:
        return (f"max cosine {num(p['max_similarity'])}, threshold {num(p['threshold'])} (reached by {p['far']} of "
                f"real photos with their nearest photo of another patient); the auditor re-identifies "
                f"{pct(p['top1_others'])} of real photos from the patient's other photos (chance {pct(p['chance'])})")

    return _attack_bar(f, "periocular", "matches",
                       "released images whose eye band re-identifies a real patient (periocular recogniser)", detail)


def _pixel_bar(f: dict) -> dict:
    def detail(p: dict) -> str:
        return (f"smallest mean absolute eye-band difference {num(p['min_distance'], 2)} (0..255); "
                f"a copy is below {p['copy_mad']}")

    return _attack_bar(f, "pixel", "copies", "released images whose eye band copies a real photo's (pixel attacker)",
                       detail)


def _tstr_bar(f: dict, figure: str, name: str, bar: str, passed: str) -> dict:
    """Trained on MeMa alone, tested on the real held-out patients: a share of the real-trained model's figure."""
    tstr, measure = f["tstr"], f"train on MeMa, test on real: {name} as a share of the real-trained model's"
    if tstr is None:
        share = TSTR_DICE_BAR if figure == "tumour_dice" else TSTR_DISEASE_BAR
        return {"measure": measure, "bar": f">= {share}", "value": None, "passed": False,
                "detail": "train-on-MeMa test not run"}
    row = tstr["figures"][figure]
    return {"measure": measure, "bar": f">= {tstr[bar]}", "value": row["ratio"], "passed": bool(tstr[passed]),
            "detail": f"{num(row['mema'])} trained on {tstr['mema_images']} MeMa images vs {num(row['real'])} "
                      f"trained on {tstr.get('real_train_photos')} real photos"}


def _face_distance_bar(f: dict) -> dict:
    distance, measure = f["face_distance"], "released faces' distance to the real photos (Fréchet, evaluator)"
    if distance is None:
        return {"measure": measure, "bar": f"<= {FACE_DISTANCE_BAR}x real vs real", "value": None, "passed": False,
                "detail": "face distance not measured"}
    return {"measure": measure, "bar": f"<= {FACE_DISTANCE_BAR}x real vs real", "value": distance["ratio"],
            "passed": distance["ratio"] <= FACE_DISTANCE_BAR + SLACK,
            "detail": f"MeMa to real {num(distance['mema_to_real'])} vs half the real patients to the other half "
                      f"{num(distance['real_to_real'])} ({distance['images']} images a side, "
                      f"{distance['repeats']} draws)"}


def _agreement_bar(f: dict) -> dict:
    agreement = f["plausibility_agreement"]
    return {"measure": "medical classifier agrees with the conditioned disease",
            "bar": f">= {AGREEMENT_BAR:.0%} of released",
            "value": agreement, "passed": agreement is not None and agreement >= AGREEMENT_BAR - SLACK,
            "detail": "no released images" if agreement is None else f"{agreement:.1%} of {f['released']} released"}


def _tv_bar(f: dict, measure: str) -> dict:
    tv = f["tv"][measure]
    return {"measure": f"released P({measure}) vs requested: total-variation distance", "bar": f"<= {TV_BAR}",
            "value": tv, "passed": tv is not None and tv <= TV_BAR + SLACK,
            "detail": "no released images" if tv is None else f"TV {tv:.3f}"}


def _accounting_bar(f: dict) -> dict:
    problems = {k: v for k, v in f["accounting"].items() if k != "never_attempted" and v}
    detail = f"sampled {f['sampled']} = released {f['released']} + rejected {f['rejected']}"
    if problems:
        detail += "; " + ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in problems.items())
    return {"measure": "accounting", "bar": "sampled = released + rejected, every rejection with its stage and reason",
            "value": sum(problems.values()), "passed": not problems, "detail": detail}


def num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"

