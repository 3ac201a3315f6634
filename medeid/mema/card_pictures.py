"""The pictures of MeMa's dataset card: histograms and bar charts (matplotlib), image grids."""

from __future__ import annotations

import io
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from medeid import codecs, storage
from medeid.mema.card_numbers import MEASURES, num
from medeid.mema.card_tables import MeMaTables, read_images
from medeid.mema.statistics import AGE_BANDS
from medeid.models.identity import centred_crop
from medeid.synth.contact_sheet import image_grid

GRID_SIZE = 128  # pixels per sample image in the picture grids


def _png(figure: Figure) -> bytes:
    # The Agg canvas directly: no pyplot, so no global backend or figure registry is touched.
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def _say_empty(axes, text: str) -> None:
    axes.text(0.5, 0.5, text, ha="center", va="center", transform=axes.transAxes, color="grey")
    axes.set_xticks([])
    axes.set_yticks([])


def similarity_png(t: MeMaTables, f: dict) -> bytes:
    """Each attacker's nearest-real figure of the released images, its threshold drawn: the pipeline
    recogniser (with the attempts it rejected), the evaluator, the periocular recogniser, the pixel attacker."""
    identity = pc.equal(t.rejections["stage"], "identity")
    rejected = pc.coalesce(t.rejections["nearest_similarity"], t.rejections["figure"]).filter(identity)
    released = t.released["nearest_similarity"].to_pylist()
    rejected = [v for v in rejected.to_pylist() if v is not None]
    panels = [lambda axes: _histogram(axes, {"released": released, "rejected by identity filter": rejected},
                                      f["identity_threshold"], "identity threshold", "pipeline recogniser")]
    if t.audit is not None:
        panels.append(lambda axes: _histogram(
            axes, {"released (evaluator)": t.audit["evaluator_similarity"].to_pylist()}, f["audit"]["threshold"],
            "evaluator match threshold", "evaluator recogniser (audit)"))
    if t.attacks is not None:
        periocular, pixel = f["attacks"]["periocular"], f["attacks"]["pixel"]
        panels.append(lambda axes: _histogram(
            axes, {"released (periocular)": t.attacks["periocular_similarity"].to_pylist()}, periocular["threshold"],
            f"threshold (FAR {periocular['far']})", "periocular recogniser (attack audit)",
            "eye-band cosine similarity to the nearest real photo"))
        panels.append(lambda axes: _histogram(
            axes, {"released (pixels)": t.attacks["pixel_distance"].to_pylist()}, pixel["copy_mad"],
            "a copy below", "pixel attacker (attack audit)",
            "mean absolute eye-band difference to the nearest real photo (0..255)"))
    rows, columns = (1, len(panels)) if len(panels) <= 2 else (2, 2)
    figure = Figure(figsize=(6 * columns, 4 * rows), layout="constrained")
    for axes, draw in zip(figure.subplots(rows, columns, squeeze=False).flat, panels):
        draw(axes)
    for axes in figure.axes[len(panels):]:
        axes.set_visible(False)
    return _png(figure)


def _histogram(axes, series: dict[str, list[float]], threshold: float | None, threshold_label: str,
               title: str, xlabel: str = "cosine similarity to the nearest real patient") -> None:
    values = [v for vs in series.values() for v in vs] + ([threshold] if threshold is not None else [])
    axes.set_title(title)
    if not any(series.values()):
        _say_empty(axes, "no similarities measured")
        return
    bins = np.linspace(min(values + [0.0]), max(values + [1.0]), 41)
    for label, data in series.items():
        if data:
            # One filled outline per series, not a patch per bin: the same picture, drawn faster.
            axes.hist(data, bins=bins, histtype="stepfilled", alpha=0.6, label=f"{label} ({len(data)})")
    if threshold is not None:
        axes.axvline(threshold, color="red", linestyle="--", label=f"{threshold_label} {threshold:.3f}")
    axes.set_xlabel(xlabel)
    axes.set_ylabel("images")
    axes.legend(fontsize=8, loc="upper left")


def distributions_png(f: dict) -> bytes:
    figure = Figure(figsize=(15, 4))
    for axes, measure in zip(figure.subplots(1, len(MEASURES)), MEASURES):
        dist = f["distributions"][measure]
        outcomes = sorted(set(dist["requested"]) | set(dist["released"]), key=outcome_order(measure))
        axes.set_title(f"{measure} (TV {num(f['tv'][measure])})")
        if not outcomes:
            _say_empty(axes, "no rows")
            continue
        x = np.arange(len(outcomes))
        axes.bar(x - 0.2, [dist["requested"].get(o, 0.0) for o in outcomes], 0.4, label="requested")
        axes.bar(x + 0.2, [dist["released"].get(o, 0.0) for o in outcomes], 0.4, label="released")
        axes.set_xticks(x, [o.replace("_", " ") for o in outcomes], rotation=30, ha="right", fontsize=8)
        axes.set_ylabel("share")
        axes.legend(fontsize=8)
    return _png(figure)


def outcome_order(measure: str):
    """Age bands in age order (not string order: '10-19' < '9-...'), the rest alphabetically."""
    if measure == "age":
        return lambda band: int(band.split("-")[0]) if band.split("-")[0].isdigit() else AGE_BANDS[-1]
    return str


def funnel_png(f: dict) -> bytes:
    labels = ["sampled"] + [f"passed {row['stage']}" for row in f["funnel"]]
    counts = [f["sampled"]] + [row["passed"] for row in f["funnel"]]
    figure = Figure(figsize=(7, 4))
    axes = figure.subplots()
    bars = axes.bar(labels, counts, color=["grey"] + ["tab:blue"] * len(f["funnel"]))
    axes.bar_label(bars)
    axes.set_ylabel("generation attempts")
    axes.set_title(f"{f['requested']} requested, {f['released']} released, {f['unfilled']} unfilled")
    axes.tick_params(axis="x", labelsize=8)
    return _png(figure)


def _message_png(text: str) -> bytes:
    figure = Figure(figsize=(5, 2))
    _say_empty(figure.subplots(), text)
    return _png(figure)


def _square(image: np.ndarray, size: int = GRID_SIZE) -> np.ndarray:
    return np.asarray(Image.fromarray(image).convert("RGB").resize((size, size), Image.Resampling.BILINEAR))


def _pick(table: pa.Table, per_disease: int, only_masked: bool = False) -> dict[str, list[str]]:
    """The first `per_disease` released sample ids of each disease, in sample-id order."""
    picked: dict[str, list[str]] = {}
    rows = zip(table["sample_id"].to_pylist(), table["disease"].to_pylist(), table["has_mask"].to_pylist())
    for sample_id, disease, has_mask in sorted(rows):
        ids = picked.setdefault(disease, [])
        if len(ids) < per_disease and (has_mask or not only_masked):
            ids.append(sample_id)
    return {d: ids for d, ids in sorted(picked.items()) if ids}


def samples_png(t: MeMaTables, per_disease: int) -> bytes:
    """One row per disease, up to `per_disease` released images each."""
    picked = _pick(t.released, per_disease)
    if not picked or per_disease < 1:
        return _message_png("no released images")
    rows = read_images(t.shards_fs, t.shard_paths, [i for ids in picked.values() for i in ids], ["image"])
    blank = np.full((GRID_SIZE, GRID_SIZE, 3), 255, dtype=np.uint8)
    grid = [[_square(codecs.decode(rows[i]["image"])) for i in ids] + [blank] * (per_disease - len(ids))
            for ids in picked.values()]
    released = Counter(t.released["disease"].to_pylist())
    labels = [f"{disease} ({released[disease]})" for disease in picked]
    return _grid_png(grid, labels, [f"sample {i + 1}" for i in range(per_disease)])


def mema_seg_png(t: MeMaTables, count: int) -> bytes | None:
    """Images with a lesion mask, and the mask overlaid in red below each; None if no image has one."""
    ids = [i for group in _pick(t.released, count, only_masked=True).values() for i in group][:count]
    if not ids:
        return None
    rows = read_images(t.shards_fs, t.shard_paths, ids, ["image", "lesion_mask"])
    images = [_square(codecs.decode(rows[i]["image"])) for i in ids]
    masks = [_square(codecs.decode(rows[i]["lesion_mask"], "L"))[..., 0] > 127 for i in ids]
    overlaid = [_overlay(image, mask) for image, mask in zip(images, masks)]
    return _grid_png([images, overlaid], ["image", "lesion mask"], ids)


def _overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    out = image.astype(np.float32)
    out[mask] = 0.45 * out[mask] + 0.55 * np.array([255.0, 0.0, 0.0])
    return out.astype(np.uint8)


def nearest_real_png(t: MeMaTables, f: dict, settings=None) -> bytes | None:
    """The released images closest to a real photo by each eye-band attacker, closest first, each above
    that real photo; a red frame marks a match or a copy. None without the attack audit."""
    if t.attacks is None:
        return None
    closest = {"periocular": [(c["sample_id"], c["match"]) for c in f["attacks"]["periocular"]["closest"]],
               "pixel": [(c["sample_id"], c["copy"]) for c in f["attacks"]["pixel"]["closest"]]}
    if not closest["periocular"]:
        return _message_png("no released images audited")
    archive = (t.auditor or {}).get("archive")
    if not archive:
        return _message_png("the attack audit did not record where the real photos are")
    nearest = {attacker: dict(zip(t.attacks["sample_id"].to_pylist(), t.attacks[f"{attacker}_nearest_key"].to_pylist()))
               for attacker in closest}
    released = read_images(t.shards_fs, t.shard_paths, [i for cases in closest.values() for i, _ in cases], ["image"])
    try:
        real = {key: _square(centred_crop(codecs.decode(storage.read_bytes(storage.join(archive, key), settings)),
                                          GRID_SIZE))
                for attacker, cases in closest.items() for key in (nearest[attacker][i] for i, _ in cases)}
    except OSError:  # the archive moved since the audit
        return _message_png(f"the real photos under {archive} could not be read")
    grid, labels = [], []
    for attacker, cases in closest.items():
        grid.append([_framed(_square(codecs.decode(released[i]["image"])), flagged) for i, flagged in cases])
        grid.append([real[nearest[attacker][i]] for i, _ in cases])
        labels += [f"released, by {attacker}", "nearest real photo"]
    width = max(len(row) for row in grid)
    blank = np.full((GRID_SIZE, GRID_SIZE, 3), 255, dtype=np.uint8)
    return _grid_png([row + [blank] * (width - len(row)) for row in grid], labels,
                     [f"closest {i + 1}" for i in range(width)])


def _framed(image: np.ndarray, flagged: bool, width: int = 4) -> np.ndarray:
    if not flagged:
        return image
    out = image.copy()
    out[:width], out[-width:], out[:, :width], out[:, -width:] = (255, 0, 0), (255, 0, 0), (255, 0, 0), (255, 0, 0)
    return out


def _grid_png(grid: list[list[np.ndarray]], row_labels: list[str], column_labels: list[str]) -> bytes:
    return codecs.encode(np.asarray(image_grid(grid, row_labels, column_labels)), "png")

