"""The MedSem-DeID evaluation written up, into a folder (local or `s3://bucket/prefix`):

    report.md            the methods table, the quality bars with PASS/FAIL, the data and the models
    grid.png             a few held-out photos as every method leaves them
    privacy_utility.png  re-identification against disease accuracy and Dice ratios and face distance, one point a method
    figures.json         every number of `medeid.evaluate.deid.evaluate_methods`
"""

from __future__ import annotations

import io
import json

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from medeid import codecs, storage
from medeid.evaluate.deid import ACCURACY_RATIO_BAR, DICE_RATIO_BAR, ORIGINAL, PSNR_CAP, REID_BAR, Grid
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
    return _num(value)


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return lines + ["| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |" for row in rows]


# ---------------------------------------------------------------------------------------------
# report.md


def _methods_table(f: dict) -> list[str]:
    header = ["method", "re-id %", "disease accuracy ratio", "Dice ratio", "face distance", "recovery PSNR (dB)",
              "recovery SSIM", "wrong-password re-id %", "two-password identities differ %"]
    o = f[ORIGINAL]
    rows = [["originals (reference)", _pct(o["reidentification_rate"]), _num(o["disease_accuracy_ratio"]),
             _num(o["dice_ratio"]), _num(o.get("face_distance")), "", "", "", ""]]
    for name, m in f["methods"].items():
        rows.append([f"**{name}**" if name == f["main"] else name, _pct(m["reidentification_rate"]),
                     _num(m["disease_accuracy_ratio"]), _num(m["dice_ratio"]), _num(m.get("face_distance")), _psnr(m),
                     _num(m.get("recovery_ssim"), 4), _pct(m.get("wrong_password_reidentification_rate")),
                     _pct(m.get("two_password_differ"))])
    return _table(header, rows)


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
        "de-identified photos divided by the same on the originals. Baselines get the true lesion masks.",
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
                axes.scatter([100 * m["reidentification_rate"]], [m[key]], color=colours.get(name, "tab:gray"),
                             marker="*" if main else "o", s=220 if main else 60, zorder=3, label=name,
                             edgecolors="white", linewidths=0.5)
        axes.set_xlabel("re-identification rate, % (lower is more private)")
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
