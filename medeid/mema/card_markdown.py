"""The README of MeMa's dataset card: the bars, the funnel, the distributions, config and versions."""

from __future__ import annotations

import json
from typing import Callable

import yaml

from medeid.mema.card_numbers import MEASURES, TOP_REASONS, TV_BAR, num, pct
from medeid.mema.card_pictures import outcome_order


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return lines + ["| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |" for row in rows]

PRIVATE_PICTURES = ("nearest_real.png",)  # written under private/attacks/, not card/


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
        "see the conditioned disease); an independent evaluator recogniser and the attack suite's eye-band "
        "attackers audit what is released.", "",
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
              "threshold stored in its row: the recogniser's match threshold or, where higher, the cosine that a share "
              "`mema.identity_far` (1 % by default) of real photos reach with their nearest photo of another patient "
              "(a search over every real photo gives a stranger that many chances), less a safety margin; no margin "
              "is added back, so the count is strict. An evaluator match is at or above the evaluator's match "
              "threshold or its open-set figure at 1e-3, whichever is higher.", ""]
    if f["audit"] is None:
        lines += ["**The evaluator audit was not run** (no `audit/` table)"
                  + (": the privacy bar cannot pass without it." if f["released"] else "."), ""]
    lines += _privacy_section(f, pictures) + _tstr_section(f) + _face_distance_section(f)
    lines += _funnel_section(f) + _distribution_section(f)
    lines += _rejection_section(f)
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


def _privacy_section(f: dict, pictures: list[str]) -> list[str]:
    """Every attacker against the released images: how each eye-band attacker works and its closest cases."""
    lines = ["## Privacy: every attacker", "",
             "Two full-face recognisers (the pipeline's identity filter and the held-out evaluator) and two "
             "attackers that look only at the eye band, where the inpaint strategy keeps a real patient's pixels "
             "(`medeid/mema/attack_audit.py`, the attack suite of `medeid/evaluate/attacks.py`):", "",
             "- **periocular recogniser**: the attack suite's eye-band CNN, trained on every real patient's photos "
             "(an auditor: it never filters or selects). Its threshold is the 99.9th percentile of real photos' "
             "cosine to their nearest photo of a *different* patient (FAR 1e-3, measured as a released image is "
             "judged: against its nearest real photo; the 99.9th percentile of pair cosines would be reached by "
             "most unrelated faces against a large archive). A released image whose nearest real photo reaches it "
             "is a match. Its strength is measured on the photos it learnt from, so it is optimistic.",
             "- **pixel attacker**: a released eye band whose mean absolute difference from a real photo's is below "
             "the copy level (0..255 scale) is a copy of it.", ""]
    attacks = f["attacks"]
    if attacks is None:
        return lines + ["**The attack audit was not run** (no `private/attacks/` table)"
                        + (": the eye-band bars cannot pass without it." if f["released"] else "."), "",
                        "![similarity](similarity.png)", ""]
    p, x = attacks["periocular"], attacks["pixel"]
    lines += [f"Periocular recogniser: trained {p['epochs']} epochs on {p['photos']} photos of {p['patients']} "
              f"patients; threshold {num(p['threshold'])}, at which {pct(p['found_at_threshold'])} of real photos "
              f"find another photo of their patient; re-identifies {pct(p['top1_others'])} of real photos from the "
              f"patient's other photos (chance {pct(p['chance'])}); TAR {num(p['tar'])} on genuine pairs at FAR "
              f"1e-3 per pair (threshold {num(p['pair_threshold'])}). Pixel attacker: a copy is below "
              f"{x['copy_mad']}.", "",
              "![similarity](similarity.png)", ""]
    rows = [[c["sample_id"], num(c["similarity"]), "match" if c["match"] else ""] for c in p["closest"]]
    lines += ["Released images closest to a real patient by the periocular recogniser:", ""]
    lines += _table(["sample", "cosine", "verdict"], rows) + [""]
    rows = [[c["sample_id"], num(c["distance"], 2), "copy" if c["copy"] else ""] for c in x["closest"]]
    lines += ["Released images closest to a real photo by the pixel attacker:", ""]
    lines += _table(["sample", "mean absolute difference", "verdict"], rows) + [""]
    if "nearest_real.png" in pictures:
        lines += ["![released beside their nearest real photo](../private/attacks/nearest_real.png)", "",
                  "`nearest_real.png` shows real patients' photos, so it is kept in `private/attacks/` for the "
                  "auditors and never ships with MeMa.", ""]
    return lines


def _measured_section(title: str, intro: str, measured: dict | None, missing: str,
                      body: Callable[[dict], list[str]]) -> list[str]:
    """A card section about one measurement: its title and what it is, then `body(measured)`, or what is
    missing when the build left no figures for it."""
    lines = [f"## {title}", "", intro, ""]
    return lines + ([missing, ""] if measured is None else body(measured))


def _tstr_section(f: dict) -> list[str]:
    def body(tstr: dict) -> list[str]:
        rows = [[key.replace("_", " "), num(row["mema"]), num(row["real"]), num(row["ratio"])]
                for key, row in tstr["figures"].items()]
        header = ["figure on real held-out photos", "trained on MeMa", "trained on real", "ratio"]
        return [f"{tstr['mema_images']} MeMa images, each {tstr.get('repeats', 1)} times an epoch, for "
                f"{tstr['epochs']} epochs; the real-trained model saw {tstr.get('real_train_photos')} photos.",
                ""] + _table(header, rows) + [""]

    return _measured_section(
        "Train on MeMa, test on real",
        "The medical model (`medeid/train/medical.py`: the same network, loss and config as the real-trained "
        "one, and as many optimisation steps) trained on the released images alone (their conditioned labels, "
        "MeMa-Seg's masks for the lesion head), and tested on the archive's held-out real patients beside the "
        "model trained on the real training patients (`medeid/mema/tstr.py`). The generator was fine-tuned on "
        "the training patients only, so the test patients are strangers to MeMa too.",
        f["tstr"], "**Not run** (no `tstr/figures.json`): the two TSTR bars cannot pass without it.", body)


def _face_distance_section(f: dict) -> list[str]:
    def body(distance: dict) -> list[str]:
        rows = [["MeMa to real", num(distance["mema_to_real"])], ["real to real", num(distance["real_to_real"])],
                ["ratio", num(distance["ratio"], 2)]]
        return _table(["", "Fréchet distance"], rows) + [
            "", f"{distance['images']} images a side, mean of {distance['repeats']} draws of the halves; "
            f"{distance['real_photos']} real photos of {distance['real_patients']} patients.", ""]

    return _measured_section(
        "Face distance",
        "Fréchet distance between Gaussians fitted to the held-out evaluator's embeddings "
        "(`medeid/mema/face_distance.py`): MeMa's released images against half of the real patients, beside "
        "the other half of the real patients against the same half, with as many images on each side.",
        f["face_distance"], "**Not measured** (no `audit/face_distance.json`): its bar cannot pass without it.", body)


def _funnel_section(f: dict) -> list[str]:
    lines = ["## Generation funnel", "", f"Requested conditions: {f['requested']}; generation attempts "
             f"(sampled = released + rejected): {f['sampled']} = {f['released']} + {f['rejected']}; "
             f"released: {f['released']}; unfilled conditions: {f['unfilled']}.", ""]
    rows = [[r["stage"], r["entered"], r["rejected"], r["passed"], pct(r["pass_rate"])] for r in f["funnel"]]
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
        rows = [[o, pct(dist["requested"].get(o, 0.0)), pct(dist["released"].get(o, 0.0)),
                 pct(cohort.get(o, 0.0)) if dist["cohort"] else "n/a"] for o in outcomes]
        lines += _table([measure, "requested", "released", "cohort"], rows) + [""]
    return lines + ["![distributions](distributions.png)", ""]


def _rejection_section(f: dict) -> list[str]:
    lines = ["## Rejections", ""]
    if not f["rejected"]:
        return lines + ["No attempt was rejected.", ""]
    lines += _table(["stage", "rejected"], list(f["rejected_by_stage"].items())) + [""]
    lines += [f"Top {min(TOP_REASONS, len(f['rejected_by_reason']))} reasons:", ""]
    lines += _table(["reason", "attempts"], list(f["rejected_by_reason"].items()))
    return lines + [""]

