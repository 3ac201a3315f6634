"""A contact sheet of the synthetic world: patients down, conditions across, for a person to look at."""

from __future__ import annotations

import textwrap

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from medeid.synth.cohort import make_patient
from medeid.synth.conditions import DISEASES, HEALTHY, Condition, sample_condition
from medeid.synth.nuisance import Nuisance
from medeid.synth.render import render


def _showcase_condition(disease: str, severity: int = 2) -> Condition:
    """A clear, moderate presentation of `disease` on the patient's right eye (image left)."""
    if disease == HEALTHY:
        return Condition()
    drawn = sample_condition(np.random.default_rng(7), disease)
    return Condition(disease=disease, laterality="right", severity=severity, variant=drawn.variant or "",
                     tumour_site=drawn.tumour_site or "", pattern_seed=drawn.pattern_seed)


def label_font(size: int) -> ImageFont.FreeTypeFont:
    """DejaVu Sans, which matplotlib ships: Pillow's default font has no glyphs for keys such as 'Zoë'."""
    from pathlib import Path

    import matplotlib

    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    return ImageFont.truetype(str(path), size) if path.is_file() else ImageFont.load_default(size=size)


def image_grid(images: list[list[np.ndarray]], row_labels: list[str], column_labels: list[str],
               gap: int = 4) -> Image.Image:
    """Lay out equal-sized RGB arrays in a grid, labelled on the left and along the top."""
    size = images[0][0].shape[0]
    font = label_font(max(10, size // 10))
    columns = [textwrap.fill(label.replace("_", " "), width=max(8, size // 7), break_long_words=False)
               for label in column_labels]
    rows = [label.replace("_", " ") for label in row_labels]
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    left = 8 + max(probe.multiline_textbbox((0, 0), label, font=font)[2] for label in rows)
    top = 8 + max(probe.multiline_textbbox((0, 0), label, font=font)[3] for label in columns)
    sheet = Image.new("RGB", (left + len(columns) * (size + gap), top + len(rows) * (size + gap)), "white")
    draw = ImageDraw.Draw(sheet)
    for j, label in enumerate(columns):
        draw.multiline_text((left + j * (size + gap) + 2, 4), label, fill="black", font=font)
    for i, label in enumerate(rows):
        draw.multiline_text((4, top + i * (size + gap) + size // 3), label, fill="black", font=font)
        for j, image in enumerate(images[i]):
            sheet.paste(Image.fromarray(image), (left + j * (size + gap), top + i * (size + gap)))
    return sheet


def contact_sheet(n_patients: int = 6, size: int = 128, seed: int = 0) -> Image.Image:
    """The first `n_patients` of the cohort, each drawn with every condition, frontal and evenly lit."""
    rows, labels = [], []
    for index in range(n_patients):
        patient = make_patient(seed, index)
        rows.append([render(patient.identity, _showcase_condition(d), Nuisance(), size).image for d in DISEASES])
        labels.append(f"{patient.patient_id}\n{patient.sex}, {patient.age}")
    return image_grid(rows, labels, list(DISEASES))
