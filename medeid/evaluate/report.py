"""The MedSem-DeID evaluation written up, into a folder (local or `s3://bucket/prefix`):

    report.md            the methods table, every attacker under both protocols, the quality bars with
                         PASS/FAIL, the data and the models
    grid.png             a few held-out photos as every method leaves them (the ideal swap among them)
    privacy_utility.png  re-identification by the worst attacker against disease accuracy, Dice and
                         face distance, one point a method
    figures.json         every number of `medeid.evaluate.figures.evaluate_methods`
"""

from __future__ import annotations

import io
import json

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from medeid import codecs, storage
from medeid.evaluate.attacks import PROTOCOL_NAMES
from medeid.evaluate.figures import ACCURACY_RATIO_BAR, DICE_RATIO_BAR, ORIGINAL, PSNR_CAP, REID_BAR
from medeid.evaluate.grid import Grid
from medeid.evaluate.privacy import ATTACKERS, BAR_PROTOCOL, privacy_bars, swap_bar, worst
from medeid.synth.contact_sheet import image_grid

REPORT, GRID, PLOT, FIGURES = "report.md", "grid.png", "privacy_utility.png", "figures.json"


# ---------------------------------------------------------------------------------------------
# Numbers as text


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _psnr(m: dict) -> str:
    if m.get("recovery_psnr") is None:
        return "n/a"
    # Every photo restored bit for bit: the PSNR is infinite, and the capped mean would mislead.
    return "exact (∞)" if m["recovery_exact"] == 1 else f"{m['recovery_psnr']:.1f}"


def _value(bar: dict) -> str:
    value = bar["value"]
    if isinstance(value, str) or value is None:
        return "n/a" if value is None else value
    if bar["unit"] == "%":
        return _pct(value)
    if bar["unit"] == "dB":
        return "exact (∞)" if value >= PSNR_CAP else f"{value:.1f} dB"
    if bar.get("interval"):
        low, high = bar["interval"]
        return f"{_num(value)} (95 % CI {_num(low)}–{_num(high)})"
    return _num(value)


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return lines + ["| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |" for row in rows]


# ---------------------------------------------------------------------------------------------
# report.md


def _methods_table(f: dict) -> list[str]:
    header = ["method", "full-face re-id %", "worst attacker re-id % (other photos)", "disease accuracy ratio",
              "laterality ratio", "Dice ratio", "face distance", "seam", "frame", "recovery PSNR (dB)", "recovery SSIM",
              "wrong-password re-id %", "two-password identities differ %"]
    o, attacks = f[ORIGINAL], (f.get("privacy") or {}).get("attacks", {})

    def worst_cell(name: str) -> str:
        if name not in attacks:
            return "n/a"
        attacker, value = worst(attacks[name])
        return f"{_pct(value)} ({attacker})"

    rows = [["originals (reference)", _pct(o["reidentification_rate"]), "", _num(o["disease_accuracy_ratio"]),
             _num(o.get("laterality_accuracy_ratio")), _num(o["dice_ratio"]), _num(o.get("face_distance")),
             _num(o.get("seam"), 2), _num(o.get("frame"), 2), "", "", "", ""]]
    for name, m in f["methods"].items():
        rows.append([f"**{name}**" if name == f["main"] else name, _pct(m["reidentification_rate"]), worst_cell(name),
                     _num(m["disease_accuracy_ratio"]), _num(m.get("laterality_accuracy_ratio")), _num(m["dice_ratio"]),
                     _num(m.get("face_distance")), _num(m.get("seam"), 2), _num(m.get("frame"), 2), _psnr(m),
                     _num(m.get("recovery_ssim"), 4),
                     _pct(m.get("wrong_password_reidentification_rate")), _pct(m.get("two_password_differ"))])
    return _table(header, rows)


def _attack_tables(f: dict) -> list[str]:
    """One table a protocol: every method against every attacker, with chance and the label oracle."""
    privacy = f.get("privacy")
    if not privacy:
        return ["The attack suite was not run."]
    attacks, references = privacy["attacks"], privacy["references"]
    lines = []
    for protocol, title in PROTOCOL_NAMES.items():
        verdict = protocol == BAR_PROTOCOL  # the bars hold on this protocol: say who passes them all

        def row(label: str, figures: dict, judged: bool = True) -> list:
            cells = [label] + [_pct(figures.get(a, {}).get(protocol)) for a in ATTACKERS]
            if verdict:
                failed = [b for b in privacy_bars(figures, attacks.get("ideal swap", {})) if not b["passed"]]
                cells.append("" if not judged else "PASS" if not failed else f"FAIL ({len(failed)})")
            return cells

        rows = [row("originals (the attackers' strength)", privacy["originals"], judged=False)]
        rows += [row(f"**{name}**" if name == f["main"] else name, figures) for name, figures in attacks.items()]
        rows += [row(f"{name}, after a wrong password", figures)
                 for name, figures in privacy.get("wrong password", {}).items()]
        for name, by_protocol in references.items():
            rows.append([f"*{name}*"] + [_pct(by_protocol[protocol])] * len(ATTACKERS) + [""] * verdict)
        if verdict and "ideal swap" in attacks:
            rows.append(["*bar for a manifestation-keeping method*"]
                        + [f"≤ {_pct(swap_bar(a, attacks['ideal swap']))}" for a in ATTACKERS] + [""])
        header = ["method", *ATTACKERS] + (["every attacker's bar"] if verdict else [])
        lines += [f"### Gallery: {title}", ""] + _table(header, rows) + [""]
    training = privacy["training"]
    lines += [
        f"Every attacker learnt on the {training['patients']} training patients' {training['photos']} photos only "
        f"and is never used to train or select a model. The **periocular** recogniser: a small CNN on the band "
        f"around the eyes, cosine softmax, {training['periocular_epochs']} epochs on the originals. The "
        f"**adaptive** attacker: the same CNN trained for {training['adaptive_epochs']} epochs on the method's own "
        "outputs for the training patients (under the attacker's own passwords), matched against the originals "
        "and against its own de-identified copies of the gallery. The **pixel** attacker: the nearest original "
        "by the raw pixels of the eye band (it finds copies). The **label oracle** knows only disease, laterality "
        "and severity and picks at random among the gallery patients who share them: diagnoses are "
        "quasi-identifiers. The **ideal swap** draws the photo's exact condition and photo conditions on someone "
        "else: no manifestation-keeping method can do better, so each attacker's bar is its own figure on the "
        "ideal swap + 3 points (at least 5 %).", ""]
    return lines


def _models_table(f: dict) -> list[str]:
    rows = [[role, f"`{model['uri']}`", model.get("version", "")] for role, model in f.get("models", {}).items()]
    return _table(["model", "URI", "version"], rows)


def _markdown(f: dict, pictures: list[str]) -> str:
    o, main = f[ORIGINAL], f["methods"][f["main"]]
    passed = all(bar["passed"] for bar in f["bars"])
    lines = [
        "# MedSem-DeID evaluation", "",
        f"**{f['photos']} held-out photos of {f['patients']} patients** ({f['tumour_photos']} with a periocular "
        f"tumour) from `{f.get('archive', 'the archive')}`, none of them seen in training. Quality bars for "
        f"{f['main']}: **{'all PASS' if passed else 'some FAIL'}**.", "",
        "## Methods", "",
    ]
    lines += _methods_table(f)
    lines += ["", "## Attacks", ""] + _attack_tables(f)
    lines += [
        "", f"Originals, for context: disease accuracy {_num(o['disease_accuracy'])}, tumour Dice "
        f"{_num(o['tumour_dice'])}, re-identification {_pct(o['reidentification_rate'])} (each photo's own "
        f"original is in the gallery, so this is the ceiling). {f['main']}: disease accuracy "
        f"{_num(main['disease_accuracy'])}, tumour Dice {_num(main['tumour_dice'])}, right password opened the "
        f"seal of {_pct(main.get('recovered'))} of photos, two-password mean cosine "
        f"{_num(main.get('two_password_mean_cosine'))} (match threshold {_num(f['match_threshold'])}).", "",
        "- **re-id %**: the held-out evaluator recogniser's top-1 retrieval of each de-identified photo among all "
        "held-out originals hits the same patient. A photo in which the evaluator finds no face is not re-identified.",
        "- **ratios**: the medical model's disease accuracy, and its mean lesion Dice over tumour photos, on the "
        "de-identified photos divided by the same on the originals. Baselines get the true lesion masks. Beside "
        "each utility bar, its 95 % interval over held-out patients drawn with replacement (a patient with all "
        "their photos): with under a hundred patients a ratio moves by a few hundredths from sampling alone, so "
        "a value within its interval of the bar is not yet a clear PASS or FAIL.",
        "- **worst attacker**: the highest re-identification by any attacker of the suite below, with only the "
        "patient's other photos in the gallery; **laterality ratio**: the medical model's laterality accuracy, "
        "de-identified over originals; **seam**: the colour step across the border of the eye region over the "
        "step beside it (the originals' own figure is the reference; a pasted band shows as more); **frame**: the "
        "same for the crop's edge, the step from the photo's outermost pixels to those just inside the paste's "
        "feathered edge over the step one feather further in (a pasted square shows as more).",
        "- **face distance**: Fréchet distance between the evaluator's embeddings of the method's photos and of the "
        "originals (FID's statistic on a face recogniser's features; lower: more like face photos). It tells a "
        "plausible face from a box that keeps only the eyes, which is private and medically useful but no face.",
        "- **recovery**: the photo recovered with its own password against the original; **wrong-password re-id**: "
        "re-identification of what a wrong password recovers; **two-password**: photos whose versions under two "
        "passwords have evaluator cosine below the match threshold.", "",
        "## Quality bars", "",
    ]
    lines += _table(["measure", "bar", "value", "result"],
                    [[b["measure"], b["bar"], _value(b), "PASS" if b["passed"] else "FAIL"] for b in f["bars"]])
    lines += ["", "## Data and models", "",
              "Photos by disease: " + ", ".join(f"{d.replace('_', ' ')} {n}"
                                               for d, n in f["photos_by_disease"].items()) + ".", ""]
    lines += _models_table(f)
    lines += ["", "## Pictures", ""] + [f"![{p}]({p})" for p in pictures] + [""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Pictures


def _png(figure: Figure) -> bytes:
    # The Agg canvas directly: no pyplot, so no global backend or figure registry is touched.
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def _privacy_utility_png(f: dict) -> bytes:
    """Three panels, re-identification across: disease accuracy ratio, lesion Dice ratio and face
    distance. A legend names the points (labels beside them collide: several baselines sit at the
    same corner)."""
    points = {"originals": f[ORIGINAL], **f["methods"]}
    privacy = f.get("privacy")
    # Privacy on the worst attacker where the suite ran (only the patient's other photos in the gallery).
    worst_of = {"originals": privacy["originals"], **privacy["attacks"]} if privacy else {}

    def reid(name: str, m: dict) -> float:
        return worst(worst_of[name])[1] if name in worst_of else m["reidentification_rate"]

    xlabel = ("worst attacker's re-identification, %\n(other photos only; lower is more private)" if privacy
              else "re-identification rate, % (lower is more private)")
    colours = dict(zip(points, ["grey", "tab:red", "tab:orange", "tab:blue", "tab:green", "black", "tab:purple",
                                "tab:brown", "tab:pink", "tab:olive", "tab:cyan"]))
    figure = Figure(figsize=(18, 5), layout="constrained")
    panels = figure.subplots(1, 3, sharex=True)
    for axes, (key, bar, label) in zip(panels, (("disease_accuracy_ratio", ACCURACY_RATIO_BAR, "disease accuracy"),
                                                ("dice_ratio", DICE_RATIO_BAR, "lesion Dice"),
                                                ("face_distance", None, "face distance"))):
        axes.axvline(100 * REID_BAR, color="black", linestyle="--", linewidth=1)
        if bar is not None:
            axes.axhline(bar, color="black", linestyle="--", linewidth=1)
        for name, m in points.items():
            if m.get(key) is not None:
                main = name == f["main"]
                axes.scatter([100 * reid(name, m)], [m[key]], color=colours.get(name, "tab:gray"),
                             marker="*" if main else "o", s=220 if main else 60, zorder=3, label=name,
                             edgecolors="white", linewidths=0.5)
        axes.set_xlabel(xlabel)
        axes.set_xlim(-5, 105)
        axes.grid(alpha=0.3)
        if bar is None:  # no bar: lower is more like the original face photos
            axes.set_ylabel(f"{label} to the originals (lower: more face-like)")
            axes.set_title(f"{label} (FID's statistic, recogniser features) vs re-identification", fontsize=10)
            continue
        axes.set_ylabel(f"{label}: de-identified / originals")
        axes.set_title(f"{label} ratio (bar {bar}) vs re-identification (bar {REID_BAR:.0%})", fontsize=10)
        bottom, top = min(-0.05, axes.get_ylim()[0]), max(1.1, axes.get_ylim()[1])
        axes.set_ylim(bottom, top)
        # Where both bars are met: the top left corner.
        axes.fill_between([-5, 100 * REID_BAR], bar, top, color="tab:green", alpha=0.1, linewidth=0)
    handles, labels = panels[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside right center", fontsize=9, frameon=False)
    figure.suptitle(f"Privacy vs utility on {f['photos']} held-out photos: dashed lines are the "
                    "quality bars, both met in the green corner")
    return _png(figure)


def _grid_png(grid: Grid) -> bytes:
    return codecs.encode(np.asarray(image_grid(list(grid.rows.values()), list(grid.rows), grid.columns)), "png")


def render_report(figures: dict, grid: Grid, output: str, settings: storage.S3Settings | None = None) -> str:
    """Write report.md, grid.png, privacy_utility.png and figures.json under `output`; returns report.md's URI."""
    pictures = {PLOT: _privacy_utility_png(figures)}
    if grid.columns:
        pictures[GRID] = _grid_png(grid)
    for name, data in pictures.items():
        storage.write_bytes(storage.join(output, name), data, settings)
    storage.write_bytes(storage.join(output, FIGURES), json.dumps(figures, indent=1).encode(), settings)
    report = storage.join(output, REPORT)
    storage.write_bytes(report, _markdown(figures, sorted(pictures)).encode(), settings)
    return report


def summary(figures: dict) -> str:
    """The bars as a few lines for a terminal."""
    lines = [f"[evaluate] {figures['main']} on {figures['photos']} held-out photos of {figures['patients']} patients:"]
    lines += [f"  {'PASS' if b['passed'] else 'FAIL'}  {b['measure']}: {_value(b)} (bar {b['bar']})"
              for b in figures["bars"]]
    return "\n".join(lines)
