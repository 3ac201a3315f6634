"""The evaluation's figures and bars from per-photo outputs (DESIGN §3): no model, no Ray.

Every method (MedSem-DeID, its ablation without Enc_med, the baselines, the ideal swap) leaves
per-photo arrays (`MethodOutputs`): what the held-out evaluator and the medical model made of its
photos, and the eye bands the attack suite looks at. From them:
- re-identification by the full-face evaluator: top-1 retrieval of each de-identified photo in a
  gallery of all the originals (the attack suite, `medeid.evaluate.privacy`, adds the others);
- utility: disease and laterality accuracy and tumour-lesion Dice, each as a ratio to the originals';
- face distance: the Fréchet distance between the evaluator's embeddings of a method's photos and
  of the originals (FID's statistic on a face recogniser's features): whether what comes out is
  still a face photo;
- MedSem-DeID only: recovery with the right password (PSNR, SSIM), re-identification after a
  wrong one, and whether two passwords give the same photo two different identities.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from medeid.evaluate.privacy import PERIOCULAR_STRENGTH_BAR, Probes, Truth, privacy_bars, seam_figure
from medeid.models.deid.baselines import BASELINES
from medeid.synth.conditions import DISEASES, PERIOCULAR_TUMOUR

MAIN, ABLATION, ORIGINAL, IDEAL_SWAP = "MedSem-DeID", "MedSem-DeID without Enc_med", "original", "ideal swap"
REID_BAR, ACCURACY_RATIO_BAR, DICE_RATIO_BAR, LATERALITY_RATIO_BAR = 0.05, 0.95, 0.90, 0.95
PSNR_BAR, SSIM_BAR, WRONG_PASSWORD_REID_BAR = 30.0, 0.95, 0.05
# Two passwords must give two identities; like the re-identification bars, 5 % of photos may fail.
TWO_PASSWORD_BAR = 0.95
FULL_FACE_TAR_BAR = 0.95  # the held-out evaluator on originals: TAR at FAR 1e-3 (a weak judge flatters)
PSNR_CAP = 100.0  # dB for a bit-exact recovery, whose PSNR is infinite (and not JSON)
_SLACK = 1e-9  # so that a figure equal to its bar is not failed by float rounding
# Patient-bootstrap draws for the utility ratios' 95 % intervals: ~86 held-out patients make a ratio's
# sampling spread (about ±0.03) as wide as the margins the bars are met or missed by.
BOOTSTRAP_DRAWS = 2000


@dataclass(frozen=True)
class HeldOut:
    """The truth about the evaluated photos, one entry a photo."""

    patients: np.ndarray  # (N,) patient ids
    diseases: np.ndarray  # (N,) index into DISEASES
    lateralities: np.ndarray | None = None  # (N,) index into LATERALITIES
    photos: np.ndarray | None = None  # (N,) photo ids
    labels: np.ndarray | None = None  # (N,) "disease/laterality/severity": what the label oracle knows

    @property
    def tumour(self) -> np.ndarray:
        return self.diseases == DISEASES.index(PERIOCULAR_TUMOUR)

    @property
    def truth(self) -> Truth:
        """Who is who, for the attack suite."""
        return Truth(self.patients, self.photos, self.labels)


@dataclass(frozen=True)
class MethodOutputs:
    """What the evaluator and the medical model made of one method's photos, one entry a photo."""

    vectors: np.ndarray  # (N, D) evaluator embeddings, L2-normalised; zeros where no face was found
    predicted: np.ndarray  # (N,) predicted disease index
    dice: np.ndarray  # (N,) Dice of the segmented lesion vs the true mask
    predicted_laterality: np.ndarray | None = None  # (N,) predicted laterality index
    bands: np.ndarray | None = None  # (N, rows, cols, 3) uint8 eye bands: what the attackers look at
    seam: np.ndarray | None = None  # (N, 2) colour steps across and beside the eye region's border
    frame: np.ndarray | None = None  # (N, 2) colour steps across and inside the paste's feathered edge
    # MedSem-DeID models and the ideal swap: the photos as the adaptive attacker de-identifies them itself
    copies: np.ndarray | None = None  # (N, rows, cols, 3) eye bands under the attacker's own passwords
    # MedSem-DeID models only:
    psnr: np.ndarray | None = None  # (N,) recovered with the right password vs the original, dB
    ssim: np.ndarray | None = None
    recovered: np.ndarray | None = None  # (N,) bool: the right password opened the seal
    wrong_password_vectors: np.ndarray | None = None  # embeddings of what a wrong password recovers
    wrong_password_refused: np.ndarray | None = None  # (N,) bool: a wrong password opened nothing
    wrong_password_bands: np.ndarray | None = None  # eye bands of what a wrong password recovers
    two_password_cosine: np.ndarray | None = None  # (N,) the photo under two passwords, evaluator cosine

    def probes(self, which: str = "outputs") -> Probes:
        """The attack suite's view: "outputs", or "wrong password" (what a wrong password recovers)."""
        if which == "wrong password":
            return Probes(self.wrong_password_bands, self.wrong_password_vectors)
        return Probes(self.bands, self.vectors)

    @classmethod
    def concatenate(cls, parts: list["MethodOutputs"]) -> "MethodOutputs":
        values = {}
        for f in fields(cls):
            pieces = [getattr(p, f.name) for p in parts]
            values[f.name] = None if pieces[0] is None else np.concatenate(pieces)
        return cls(**values)


def reidentification_rate(query_vectors: np.ndarray, gallery_vectors: np.ndarray, query_patients: np.ndarray,
                          gallery_patients: np.ndarray, chunk: int = 1024) -> float:
    """Share of queries whose nearest gallery photo (cosine) is of the same patient.

    A query without a face (a zero vector) matches nothing, so it is not re-identified."""
    query_patients, gallery_patients = np.asarray(query_patients), np.asarray(gallery_patients)
    found = np.linalg.norm(query_vectors, axis=1) > 0
    hits = np.zeros(len(query_vectors), bool)
    for start in range(0, len(query_vectors), chunk):  # chunks: a gallery of 10k is a 10k x 10k matrix
        nearest = (query_vectors[start:start + chunk] @ gallery_vectors.T).argmax(1)
        hits[start:start + chunk] = gallery_patients[nearest] == query_patients[start:start + chunk]
    return float((hits & found).mean()) if len(hits) else 0.0


def frechet_distance(vectors: np.ndarray, reference: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two sets of embeddings (rows): FID's statistic.

    The covariance square root goes through symmetric eigendecompositions, which stay real and
    stable when there are fewer photos than dimensions (the covariances are then singular)."""
    mu_a, mu_b = vectors.mean(0), reference.mean(0)
    cov_a, cov_b = np.cov(vectors, rowvar=False), np.cov(reference, rowvar=False)
    w, v = np.linalg.eigh(cov_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cov_b @ root_a), 0, None)).sum()  # tr sqrt(A B)
    distance = ((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * cross
    return max(0.0, float(distance))  # not -0.000 from rounding


def recovery_quality(originals: np.ndarray, recovered: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-photo PSNR (dB, capped at PSNR_CAP) and SSIM of recovered uint8 RGB photos vs the originals."""
    psnr, ssim = [], []
    for a, b in zip(originals, recovered, strict=True):
        exact = np.array_equal(a, b)
        psnr.append(PSNR_CAP if exact else min(PSNR_CAP, peak_signal_noise_ratio(a, b, data_range=255)))
        ssim.append(1.0 if exact else structural_similarity(a, b, channel_axis=-1, data_range=255))
    return np.array(psnr, np.float64), np.array(ssim, np.float64)


def _ratio(value: float | None, reference: float | None) -> float | None:
    return None if value is None or not reference else value / reference


def _mean(values: np.ndarray) -> float | None:
    return float(np.mean(values)) if len(values) else None


def utility_intervals(truth: HeldOut, original: MethodOutputs, outputs: MethodOutputs,
                      draws: int = BOOTSTRAP_DRAWS, seed: int = 0) -> dict[str, list[float] | None]:
    """95 % intervals of the utility ratios over held-out patients drawn with replacement (each patient
    with all their photos, on both sides of the ratio: a patient's photos are not independent)."""
    patients, index = np.unique(np.asarray(truth.patients), return_inverse=True)
    weights = np.random.default_rng(seed).multinomial(len(patients), np.full(len(patients), 1 / len(patients)),
                                                      size=draws).astype(np.float64)

    def interval(ours: np.ndarray, theirs: np.ndarray) -> list[float] | None:
        # sum over drawn patients of our per-photo figure / the same of the originals': the ratio of means
        numerator = weights @ np.bincount(index, ours.astype(np.float64), len(patients))
        denominator = weights @ np.bincount(index, theirs.astype(np.float64), len(patients))
        kept = denominator > 0
        if not kept.any():
            return None
        return [float(q) for q in np.percentile(numerator[kept] / denominator[kept], [2.5, 97.5])]

    tumour = truth.tumour
    laterality = None
    if outputs.predicted_laterality is not None and truth.lateralities is not None:
        laterality = interval(outputs.predicted_laterality == truth.lateralities,
                              original.predicted_laterality == truth.lateralities)
    disease = interval(outputs.predicted == truth.diseases, original.predicted == truth.diseases)
    return {"disease_accuracy_ratio": disease, "laterality_accuracy_ratio": laterality,
            "dice_ratio": interval(np.where(tumour, outputs.dice, 0), np.where(tumour, original.dice, 0))}


def method_figures(truth: HeldOut, original: MethodOutputs, outputs: MethodOutputs,
                   match_threshold: float | None, reference: dict | None = None) -> dict:
    """The figures of one method's outputs; `reference` (the originals' figures) gives the ratios."""
    accuracy = float((outputs.predicted == truth.diseases).mean())
    laterality = None
    if outputs.predicted_laterality is not None and truth.lateralities is not None:
        laterality = float((outputs.predicted_laterality == truth.lateralities).mean())
    tumour_dice = _mean(outputs.dice[truth.tumour])
    figures = {
        "reidentification_rate": reidentification_rate(outputs.vectors, original.vectors, truth.patients,
                                                       truth.patients),
        "no_face": float((np.linalg.norm(outputs.vectors, axis=1) == 0).mean()),
        "face_distance": frechet_distance(outputs.vectors, original.vectors) if len(outputs.vectors) > 1 else None,
        "disease_accuracy": accuracy,
        "laterality_accuracy": laterality,
        "tumour_dice": tumour_dice,
        "disease_accuracy_ratio": _ratio(accuracy, reference["disease_accuracy"]) if reference else 1.0,
        "laterality_accuracy_ratio": _ratio(laterality, reference.get("laterality_accuracy")) if reference else 1.0,
        "dice_ratio": _ratio(tumour_dice, reference["tumour_dice"]) if reference else 1.0,
        "seam": seam_figure(outputs.seam) if outputs.seam is not None else None,
        "frame": seam_figure(outputs.frame) if outputs.frame is not None else None,
        "utility_intervals": utility_intervals(truth, original, outputs) if reference else None,
    }
    if outputs.psnr is None:
        return figures
    cosine = outputs.two_password_cosine
    figures.update({
        "recovery_psnr": float(outputs.psnr.mean()),
        "recovery_ssim": float(outputs.ssim.mean()),
        "recovery_exact": float((outputs.psnr >= PSNR_CAP).mean()),
        "recovered": float(outputs.recovered.mean()),
        "wrong_password_reidentification_rate": reidentification_rate(
            outputs.wrong_password_vectors, original.vectors, truth.patients, truth.patients),
        "wrong_password_refused": float(outputs.wrong_password_refused.mean()),
        "two_password_differ": None if match_threshold is None else float((cosine < match_threshold).mean()),
        "two_password_mean_cosine": float(cosine.mean()),
    })
    return figures


def dominated_by(method: dict, others: dict[str, dict]) -> list[str]:
    """The methods in `others` at least as private and as useful as `method` on every axis, and
    better on one: lower-or-equal re-identification and face distance, higher-or-equal accuracy and
    Dice ratios. A method without a face distance is compared on the other three."""
    axes = (("reidentification_rate", -1), ("disease_accuracy_ratio", 1), ("dice_ratio", 1), ("face_distance", -1))
    beaten_by = []
    for name, other in others.items():
        # An axis one side has no figure for (no tumour photos: no Dice) decides nothing.
        gains = [sign * (other[axis] - method[axis]) for axis, sign in axes
                 if other.get(axis) is not None and method.get(axis) is not None]
        if gains and all(g >= -_SLACK for g in gains) and any(g > _SLACK for g in gains):
            beaten_by.append(name)
    return beaten_by


def _bar(measure: str, bar: str, value, passed: bool, unit: str = "", interval: list[float] | None = None) -> dict:
    """One bar; `unit` says how to show the value: "%" (a rate), "dB", or "" (a plain number); `interval`
    its 95 % interval where sampling decides (PASS/FAIL reads the value itself)."""
    return {"measure": measure, "bar": bar, "value": value, "unit": unit, "passed": bool(passed),
            **({"interval": interval} if interval else {})}


def _at_most(value: float | None, limit: float) -> bool:
    return value is not None and value <= limit + _SLACK


def _at_least(value: float | None, limit: float) -> bool:
    return value is not None and value >= limit - _SLACK


def quality_bars(methods: dict[str, dict], main: str = MAIN) -> list[dict]:
    """DESIGN §3's bars for `main`, each with its value and PASS (True) or FAIL."""
    m = methods[main]
    # DESIGN §3 counts the ablation among the baselines: if it dominated, Enc_med would not be earning its keep.
    baselines = {name: methods[name] for name in (*BASELINES, ABLATION) if name in methods}
    beaten_by = dominated_by(m, baselines)
    intervals = m.get("utility_intervals") or {}
    return [
        _bar("re-identification, full-face evaluator (own original in the gallery)", f"<= {REID_BAR:.0%}",
             m["reidentification_rate"],
             _at_most(m["reidentification_rate"], REID_BAR), "%"),
        _bar("disease accuracy ratio", f">= {ACCURACY_RATIO_BAR}", m["disease_accuracy_ratio"],
             _at_least(m["disease_accuracy_ratio"], ACCURACY_RATIO_BAR),
             interval=intervals.get("disease_accuracy_ratio")),
        _bar("lesion Dice ratio", f">= {DICE_RATIO_BAR}", m["dice_ratio"], _at_least(m["dice_ratio"], DICE_RATIO_BAR),
             interval=intervals.get("dice_ratio")),
        *([_bar("laterality accuracy ratio", f">= {LATERALITY_RATIO_BAR}", m["laterality_accuracy_ratio"],
                _at_least(m["laterality_accuracy_ratio"], LATERALITY_RATIO_BAR),
                interval=intervals.get("laterality_accuracy_ratio"))]
          if m.get("laterality_accuracy_ratio") is not None else []),
        _bar("recovery PSNR (right password)", f">= {PSNR_BAR:.0f} dB", m.get("recovery_psnr"),
             _at_least(m.get("recovery_psnr"), PSNR_BAR), "dB"),
        _bar("recovery SSIM (right password)", f">= {SSIM_BAR}", m.get("recovery_ssim"),
             _at_least(m.get("recovery_ssim"), SSIM_BAR)),
        _bar("re-identification after a wrong password", f"<= {WRONG_PASSWORD_REID_BAR:.0%}",
             m.get("wrong_password_reidentification_rate"),
             _at_most(m.get("wrong_password_reidentification_rate"), WRONG_PASSWORD_REID_BAR), "%"),
        _bar("two passwords, same photo: identities differ",
             f">= {TWO_PASSWORD_BAR:.0%} of photos below the match threshold", m.get("two_password_differ"),
             _at_least(m.get("two_password_differ"), TWO_PASSWORD_BAR), "%"),
        _bar("beats every baseline on the privacy-utility trade-off (re-id, accuracy, Dice, face distance)",
             "dominated by no baseline",
             "dominated by " + ", ".join(beaten_by) if beaten_by else "dominated by none",
             bool(baselines) and not beaten_by),
    ]


def privacy_quality_bars(privacy: dict, main: str = MAIN) -> list[dict]:
    """The attack suite's bars for `main` (`medeid.evaluate.privacy`): every attacker against its own
    figure on the ideal swap, for the de-identified photos and for what a wrong password leaves, and
    the attackers' own strength on originals (a weak judge flatters every method)."""
    ideal = privacy["attacks"].get(IDEAL_SWAP, {})
    bars = privacy_bars(privacy["attacks"][main], ideal)
    if main in privacy.get("wrong password", {}):
        bars += privacy_bars(privacy["wrong password"][main], ideal, " after a wrong password")
    strength = privacy["strength"]
    bars.append(_bar("attacker strength: periocular recogniser, top-1 on originals (other photos only)",
                     f">= {PERIOCULAR_STRENGTH_BAR:.0%}", strength["periocular"],
                     _at_least(strength["periocular"], PERIOCULAR_STRENGTH_BAR), "%"))
    if strength.get("full_face_tar") is not None:
        bars.append(_bar("attacker strength: full-face evaluator, TAR at FAR 1e-3 on held-out originals",
                         f">= {FULL_FACE_TAR_BAR}", strength["full_face_tar"],
                         _at_least(strength["full_face_tar"], FULL_FACE_TAR_BAR)))
    return bars


def evaluate_methods(truth: HeldOut, original: MethodOutputs, methods: dict[str, MethodOutputs],
                     match_threshold: float | None, main: str = MAIN, privacy: dict | None = None) -> dict:
    """Every figure of the evaluation (JSON-ready) from per-photo outputs; `methods` must hold `main`.
    `privacy` is the attack suite's (`medeid.evaluate.deid.run_attacks`); its bars join the others."""
    reference = method_figures(truth, original, original, match_threshold)
    figures = {name: method_figures(truth, original, outputs, match_threshold, reference)
               for name, outputs in methods.items()}
    bars = quality_bars(figures, main) + (privacy_quality_bars(privacy, main) if privacy else [])
    return {
        "photos": int(len(truth.patients)),
        "patients": int(len(set(truth.patients.tolist()))),
        "tumour_photos": int(truth.tumour.sum()),
        "photos_by_disease": {d: int((truth.diseases == i).sum()) for i, d in enumerate(DISEASES)},
        "match_threshold": match_threshold,
        "main": main,
        ORIGINAL: reference,
        "methods": figures,
        "privacy": privacy,
        "bars": bars,
    }
