"""MeMa's dataset card: the figures a built MeMa is judged by, and a README with pictures.

Reads what a build wrote under its root (a local folder or `s3://bucket/prefix`):
    conditions/*.parquet   requested condition rows (schema.MEMA_CONDITION)
    shards/*.parquet       released images (schema.MEMA_IMAGE)
    rejections/*.parquet   rejected generation attempts (schema.MEMA_REJECTION)
    audit/*.parquet        evaluator recogniser's privacy audit (schema.MEMA_AUDIT); may be missing
    statistics.json        the real cohort's statistics (CohortStatistics)
and writes under `<root>/card/`:
    README.md              the DESIGN quality bars with PASS/FAIL, the funnel, the distributions,
                           rejection reasons, config and package versions
    figures.json           the numbers of `card_figures`
    similarity.png, distributions.png, funnel.png, samples.png, mema_seg.png (if any mask)

Only small columns are read to count; image bytes are read for the few sample images alone.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from medeid import codecs, schema, storage
from medeid.mema.statistics import AGE_BANDS, CohortStatistics, age_band, share, total_variation
from medeid.synth.contact_sheet import image_grid

CONDITIONS, SHARDS, REJECTIONS, AUDIT, STATISTICS, CARD = (
    "conditions", "shards", "rejections", "audit", "statistics.json", "card")
STAGES = schema.MEMA_STAGES
TV_BAR = 0.05
AGREEMENT_BAR = 0.90
TOP_REASONS = 10
MEASURES = ("age", "sex", "disease")
_SLACK = 1e-9  # so that a figure equal to its bar is not failed by float rounding
_GRID_SIZE = 128  # pixels per sample image in the picture grids


# ---------------------------------------------------------------------------------------------
# Reading the build's tables


@dataclass(frozen=True)
class _MeMaTables:
    """The light columns of a built MeMa, plus where the shards live for reading sample images."""

    conditions: pa.Table
    released: pa.Table  # shards without image bytes; `has_mask` replaces `lesion_mask`
    rejections: pa.Table
    audit: pa.Table | None  # None: the audit was not run
    cohort: CohortStatistics | None
    shards_fs: object
    shard_paths: list[str]


def _parquet_paths(uri: str, settings) -> tuple[object, list[str]]:
    """The Parquet files under `uri` as paths inside its pyarrow filesystem (none if it is missing)."""
    fs, base = storage.filesystem(uri, settings)
    files = [f for f in storage.list_files(uri, settings) if f.endswith(".parquet")]
    return fs, [f"{base}/{storage.relative_key(uri, f)}" for f in files]


def _read_columns(fs, paths: list[str], table_schema: pa.Schema, columns) -> pa.Table:
    """`columns` (names, or name -> expression) of every file; the schema makes empty and full reads agree."""
    dataset = pads.dataset(paths, schema=table_schema, filesystem=fs, format="parquet")
    return dataset.to_table(columns=columns)


def _load_tables(root: str, settings) -> _MeMaTables:
    fs, paths = _parquet_paths(storage.join(root, CONDITIONS), settings)
    if not paths:
        # A build writes its conditions before generating anything: without them, the root is wrong.
        raise FileNotFoundError(f"no {CONDITIONS}/*.parquet under {root}: not the root of a MeMa build")
    conditions = _read_columns(fs, paths, schema.MEMA_CONDITION, ["sample_id", "age", "sex", "disease"])

    shards_fs, shard_paths = _parquet_paths(storage.join(root, SHARDS), settings)
    released_columns = {name: pc.field(name) for name in (
        "sample_id", "attempt", "age", "sex", "disease", "predicted_disease", "nearest_similarity",
        "identity_threshold")}
    # Masks are images too: test them for null in the scan instead of keeping their bytes.
    released_columns["has_mask"] = pc.field("lesion_mask").is_valid()
    released = _read_columns(shards_fs, shard_paths, schema.MEMA_IMAGE, released_columns)

    fs, paths = _parquet_paths(storage.join(root, REJECTIONS), settings)
    rejections = _read_columns(fs, paths, schema.MEMA_REJECTION, [
        "sample_id", "attempt", "disease", "stage", "reason", "figure", "threshold", "nearest_similarity"])

    fs, paths = _parquet_paths(storage.join(root, AUDIT), settings)
    audit = (_read_columns(fs, paths, schema.MEMA_AUDIT, ["sample_id", "evaluator_similarity", "evaluator_threshold"])
             if paths else None)

    statistics_uri = storage.join(root, STATISTICS)
    cohort = CohortStatistics.load(statistics_uri, settings) if storage.exists(statistics_uri, settings) else None
    return _MeMaTables(conditions, released, rejections, audit, cohort, shards_fs, shard_paths)


def _read_images(fs, paths: list[str], sample_ids: list[str], columns: list[str]) -> dict[str, dict]:
    """`columns` of the shard rows with these sample ids, reading only the row groups that hold them."""
    wanted, found = set(sample_ids), {}
    for path in paths:
        with fs.open_input_file(path) as handle:
            shard = pq.ParquetFile(handle)
            for group in range(shard.num_row_groups):
                ids = shard.read_row_group(group, columns=["sample_id"])["sample_id"].to_pylist()
                rows = [i for i, sample_id in enumerate(ids) if sample_id in wanted]
                if rows:
                    table = shard.read_row_group(group, columns=["sample_id", *columns]).take(rows)
                    found.update({row["sample_id"]: row for row in table.to_pylist()})
        if len(found) == len(wanted):
            break
    return found


# ---------------------------------------------------------------------------------------------
# The figures


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


def _accounting(t: _MeMaTables) -> dict:
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


def _identity_threshold(t: _MeMaTables) -> float | None:
    """The identity filter's threshold as stored in the rows (the lowest, if a build changed it)."""
    stored = t.released["identity_threshold"].to_pylist() or [
        v for s, v in zip(t.rejections["stage"].to_pylist(), t.rejections["threshold"].to_pylist())
        if s == "identity" and v is not None]
    return min(stored) if stored else None


def _audit_figures(t: _MeMaTables) -> dict | None:
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


def card_figures(root: str, settings: storage.S3Settings | None = None) -> dict:
    """The numbers of the dataset card of the MeMa built under `root` (JSON-ready)."""
    return _figures(_load_tables(root, settings))


def _figures(t: _MeMaTables) -> dict:
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
        "accounting": _accounting(t),
    }
    figures["bars"] = _bars(figures)
    return figures


def _bars(f: dict) -> list[dict]:
    """The DESIGN quality bars of MeMa: measure, bar, value, passed, and a line saying how."""
    return [_privacy_bar(f), _agreement_bar(f), *(_tv_bar(f, m) for m in MEASURES), _accounting_bar(f)]


def _privacy_bar(f: dict) -> dict:
    audit, released = f["audit"], f["released"]
    pipeline = (f"pipeline recogniser: {f['matches_pipeline']} of {released} "
                f"(max similarity {_num(f['max_nearest_similarity'])}, threshold {_num(f['identity_threshold'])})")
    if audit is None:
        evaluator = "evaluator recogniser: audit not run"
    else:
        evaluator = (f"evaluator recogniser: {audit['matches']} of {audit['audited']} audited, {audit['unaudited']} "
                     f"not audited (max similarity {_num(audit['max_similarity'])}, "
                     f"threshold {_num(audit['threshold'])})")
    # Both recognisers must have looked at every released image; nothing released needs no audit.
    evaluator_clear = released == 0 or (audit is not None and audit["matches"] == 0 and audit["unaudited"] == 0)
    return {"measure": "released images whose nearest real patient is a match (either recogniser)", "bar": "= 0",
            "value": f["matches_pipeline"] + (audit["matches"] if audit else 0),
            "passed": f["matches_pipeline"] == 0 and evaluator_clear, "detail": f"{pipeline}; {evaluator}"}


def _agreement_bar(f: dict) -> dict:
    agreement = f["plausibility_agreement"]
    return {"measure": "medical classifier agrees with the conditioned disease",
            "bar": f">= {AGREEMENT_BAR:.0%} of released",
            "value": agreement, "passed": agreement is not None and agreement >= AGREEMENT_BAR - _SLACK,
            "detail": "no released images" if agreement is None else f"{agreement:.1%} of {f['released']} released"}


def _tv_bar(f: dict, measure: str) -> dict:
    tv = f["tv"][measure]
    return {"measure": f"released P({measure}) vs requested: total-variation distance", "bar": f"<= {TV_BAR}",
            "value": tv, "passed": tv is not None and tv <= TV_BAR + _SLACK,
            "detail": "no released images" if tv is None else f"TV {tv:.3f}"}


def _accounting_bar(f: dict) -> dict:
    problems = {k: v for k, v in f["accounting"].items() if k != "never_attempted" and v}
    detail = f"sampled {f['sampled']} = released {f['released']} + rejected {f['rejected']}"
    if problems:
        detail += "; " + ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in problems.items())
    return {"measure": "accounting", "bar": "sampled = released + rejected, every rejection with its stage and reason",
            "value": sum(problems.values()), "passed": not problems, "detail": detail}


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


# ---------------------------------------------------------------------------------------------
# Pictures


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


def _similarity_png(t: _MeMaTables, f: dict) -> bytes:
    """Nearest-real similarity of released and identity-rejected attempts; the audit beside it."""
    identity = pc.equal(t.rejections["stage"], "identity")
    rejected = pc.coalesce(t.rejections["nearest_similarity"], t.rejections["figure"]).filter(identity)
    released = t.released["nearest_similarity"].to_pylist()
    rejected = [v for v in rejected.to_pylist() if v is not None]
    panels = 1 if t.audit is None else 2
    figure = Figure(figsize=(6 * panels, 4))
    axes = figure.subplots(1, panels, squeeze=False)[0]
    _histogram(axes[0], {"released": released, "rejected by identity filter": rejected},
               f["identity_threshold"], "identity threshold", "pipeline recogniser")
    if t.audit is not None:
        _histogram(axes[1], {"released (evaluator)": t.audit["evaluator_similarity"].to_pylist()},
                   f["audit"]["threshold"], "evaluator match threshold", "evaluator recogniser (audit)")
    return _png(figure)


def _histogram(axes, series: dict[str, list[float]], threshold: float | None, threshold_label: str,
               title: str) -> None:
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
    axes.set_xlabel("cosine similarity to the nearest real patient")
    axes.set_ylabel("images")
    axes.legend(fontsize=8, loc="upper left")


def _distributions_png(f: dict) -> bytes:
    figure = Figure(figsize=(15, 4))
    for axes, measure in zip(figure.subplots(1, len(MEASURES)), MEASURES):
        dist = f["distributions"][measure]
        outcomes = sorted(set(dist["requested"]) | set(dist["released"]), key=_outcome_order(measure))
        axes.set_title(f"{measure} (TV {_num(f['tv'][measure])})")
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


def _outcome_order(measure: str):
    """Age bands in age order (not string order: '10-19' < '9-...'), the rest alphabetically."""
    if measure == "age":
        return lambda band: int(band.split("-")[0]) if band.split("-")[0].isdigit() else AGE_BANDS[-1]
    return str


def _funnel_png(f: dict) -> bytes:
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


def _square(image: np.ndarray, size: int = _GRID_SIZE) -> np.ndarray:
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


def _samples_png(t: _MeMaTables, per_disease: int) -> bytes:
    """One row per disease, up to `per_disease` released images each."""
    picked = _pick(t.released, per_disease)
    if not picked or per_disease < 1:
        return _message_png("no released images")
    rows = _read_images(t.shards_fs, t.shard_paths, [i for ids in picked.values() for i in ids], ["image"])
    blank = np.full((_GRID_SIZE, _GRID_SIZE, 3), 255, dtype=np.uint8)
    grid = [[_square(codecs.decode(rows[i]["image"])) for i in ids] + [blank] * (per_disease - len(ids))
            for ids in picked.values()]
    released = Counter(t.released["disease"].to_pylist())
    labels = [f"{disease} ({released[disease]})" for disease in picked]
    return _grid_png(grid, labels, [f"sample {i + 1}" for i in range(per_disease)])


def _mema_seg_png(t: _MeMaTables, count: int) -> bytes | None:
    """Images with a lesion mask, and the mask overlaid in red below each; None if no image has one."""
    ids = [i for group in _pick(t.released, count, only_masked=True).values() for i in group][:count]
    if not ids:
        return None
    rows = _read_images(t.shards_fs, t.shard_paths, ids, ["image", "lesion_mask"])
    images = [_square(codecs.decode(rows[i]["image"])) for i in ids]
    masks = [_square(codecs.decode(rows[i]["lesion_mask"], "L"))[..., 0] > 127 for i in ids]
    overlaid = [_overlay(image, mask) for image, mask in zip(images, masks)]
    return _grid_png([images, overlaid], ["image", "lesion mask"], ids)


def _overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    out = image.astype(np.float32)
    out[mask] = 0.45 * out[mask] + 0.55 * np.array([255.0, 0.0, 0.0])
    return out.astype(np.uint8)


def _grid_png(grid: list[list[np.ndarray]], row_labels: list[str], column_labels: list[str]) -> bytes:
    return codecs.encode(np.asarray(image_grid(grid, row_labels, column_labels)), "png")


# ---------------------------------------------------------------------------------------------
# The README


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return lines + ["| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |" for row in rows]


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _plain(value):
    """The config as plain YAML types (paths, enums and the like as strings)."""
    return json.loads(json.dumps(value, default=str))


def _markdown(f: dict, config: dict, versions: dict, pictures: list[str]) -> str:
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
        outcomes = sorted(set(dist["requested"]) | set(dist["released"]) | set(cohort), key=_outcome_order(measure))
        lines += [f"### {measure}", "", f"TV vs requested {_num(f['tv'][measure])}, "
                  f"vs cohort {_num(f['tv_vs_cohort'][measure])}", ""]
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


# ---------------------------------------------------------------------------------------------
# The card


def write_card(root: str, *, config: dict, versions: dict, settings: storage.S3Settings | None = None,
               samples_per_condition: int = 6) -> str:
    """Write the dataset card of the MeMa built under `root` to `<root>/card/`; returns README.md's URI.

    Args:
        config: the build's resolved config, shown as YAML.
        versions: package -> version, shown as a table.
        samples_per_condition: released images per disease in samples.png.
    """
    tables = _load_tables(root, settings)
    figures = _figures(tables)
    card = storage.join(root, CARD)
    # 1. Pictures; MeMa-Seg's only when some image has a mask.
    pictures = {
        "similarity.png": _similarity_png(tables, figures),
        "distributions.png": _distributions_png(figures),
        "funnel.png": _funnel_png(figures),
        "samples.png": _samples_png(tables, samples_per_condition),
        "mema_seg.png": _mema_seg_png(tables, samples_per_condition),
    }
    pictures = {name: data for name, data in pictures.items() if data is not None}
    for name, data in pictures.items():
        storage.write_bytes(storage.join(card, name), data, settings)
    # 2. The numbers, for machines; 3. the README, for people.
    storage.write_bytes(storage.join(card, "figures.json"), json.dumps(figures, indent=1).encode(), settings)
    readme = storage.join(card, "README.md")
    storage.write_bytes(readme, _markdown(figures, config, versions, list(pictures)).encode(), settings)
    return readme
