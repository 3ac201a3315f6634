"""The README of MeMa's dataset card: the bars, the funnel, the distributions, config and versions."""

from __future__ import annotations

import json

import yaml

from medeid.mema.card_numbers import MEASURES, TOP_REASONS, TV_BAR, num
from medeid.mema.card_pictures import outcome_order

def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return lines + ["| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |" for row in rows]


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _plain(value):
    """The config as plain YAML types (paths, enums and the like as strings)."""
    return json.loads(json.dumps(value, default=str))


def markdown(f: dict, config: dict, versions: dict, pictures: list[str]) -> str:
    passed = all(bar["passed"] for bar in f["bars"])
    lines = [
        "# MeMa dataset card", "",
        "MeMa is a synthetic patient-face dataset: each image is generated from a condition (age, sex, disease "
        "and its presentation) drawn from a real cohort's statistics, so it shows the medical manifestation "
        "without being any real patient. Every generated image passes a face-quality filter, an identity filter "
        "(its nearest real patient must not be a match) and a plausibility filter (a medical classifier must "
        "see the conditioned disease), and an independent evaluator recogniser audits what is released.", "",
        f"**{f['released']} images released** from {f['requested']} requested conditions "
        f"({f['sampled']} generation attempts, {f['rejected']} rejected, {f['unfilled']} conditions unfilled); "
        f"**{f['mema_seg']} MeMa-Seg images** (periocular tumours with a lesion mask). "
        f"Quality bars: **{'all PASS' if passed else 'some FAIL'}**.", "",
    ]
    if f["released"] == 0:
        lines += [f"**No image was released**: every one of the {f['sampled']} generation attempts was rejected"
                  + (" (no attempt was made)." if f["sampled"] == 0 else "."), ""]
    lines += ["## Quality bars", ""]
    lines += _table(["measure", "bar", "value", "result", "how"],
                    [[b["measure"], b["bar"], _bar_value(b), "PASS" if b["passed"] else "FAIL", b["detail"]]
                     for b in f["bars"]])
    lines += ["", "A pipeline match is a released image whose nearest-real similarity is at or above the identity "
              "threshold stored in its row, which is the recogniser's match threshold minus a safety margin; "
              "no margin is added back, so the count is strict. An evaluator match is at or above the evaluator's "
              "own match threshold.", ""]
    if f["audit"] is None:
        lines += ["**The evaluator audit was not run** (no `audit/` table)"
                  + (": the privacy bar cannot pass without it." if f["released"] else "."), ""]
    lines += _funnel_section(f) + _distribution_section(f) + _rejection_section(f)
    lines += ["## MeMa-Seg", "", f"{f['mema_seg']} released images carry a lesion mask made by the segmenter"
              + (" (see [mema_seg.png](mema_seg.png))." if "mema_seg.png" in pictures else "."), ""]
    lines += ["## Pictures", ""] + [f"- [{p}]({p})" for p in pictures] + [""]
    lines += ["## Config", "", "```yaml", yaml.safe_dump(_plain(config), sort_keys=False).rstrip() if config else "{}",
              "```", ""]
    lines += ["## Package versions", ""] + _table(["package", "version"], sorted(versions.items())) + [""]
    return "\n".join(lines)


def _bar_value(bar: dict) -> str:
    value = bar["value"]
    if value is None:
        return "n/a"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _funnel_section(f: dict) -> list[str]:
    lines = ["## Generation funnel", "", f"Requested conditions: {f['requested']}; generation attempts "
             f"(sampled = released + rejected): {f['sampled']} = {f['released']} + {f['rejected']}; "
             f"released: {f['released']}; unfilled conditions: {f['unfilled']}.", ""]
    rows = [[r["stage"], r["entered"], r["rejected"], r["passed"], _pct(r["pass_rate"])] for r in f["funnel"]]
    return lines + _table(["stage", "attempts in", "rejected", "passed", "pass rate"], rows) + \
        ["", "![funnel](funnel.png)", ""]


def _distribution_section(f: dict) -> list[str]:
    lines = ["## Released vs requested", "",
             "Total-variation distance (TV) of the released images' conditions from the requested ones "
             f"(bar <= {TV_BAR}) and from the real cohort's statistics.", ""]
    for measure in MEASURES:
        dist = f["distributions"][measure]
        cohort = dist["cohort"] or {}
        outcomes = sorted(set(dist["requested"]) | set(dist["released"]) | set(cohort), key=outcome_order(measure))
        lines += [f"### {measure}", "", f"TV vs requested {num(f['tv'][measure])}, "
                  f"vs cohort {num(f['tv_vs_cohort'][measure])}", ""]
        rows = [[o, _pct(dist["requested"].get(o, 0.0)), _pct(dist["released"].get(o, 0.0)),
                 _pct(cohort.get(o, 0.0)) if dist["cohort"] else "n/a"] for o in outcomes]
        lines += _table([measure, "requested", "released", "cohort"], rows) + [""]
    return lines + ["![distributions](distributions.png)", ""]


def _rejection_section(f: dict) -> list[str]:
    lines = ["## Rejections", ""]
    if not f["rejected"]:
        return lines + ["No attempt was rejected.", ""]
    lines += _table(["stage", "rejected"], list(f["rejected_by_stage"].items())) + [""]
    lines += [f"Top {min(TOP_REASONS, len(f['rejected_by_reason']))} reasons:", ""]
    lines += _table(["reason", "attempts"], list(f["rejected_by_reason"].items()))
    return lines + ["", "![similarity](similarity.png)", ""]

