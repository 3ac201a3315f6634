"""Pictures of what a generator draws: one row per disease, and the strategies side by side."""

from __future__ import annotations

import io

import numpy as np

from medeid import storage
from medeid.config import Config
from medeid.mema.generation import STRATEGIES, FaceGenerator, keep_region
from medeid.mema.prompts import prompt
from medeid.synth.contact_sheet import image_grid

SHOWCASE = {  # one typical presentation per disease, for pictures
    "healthy": ("none", 0, []),
    "ptosis": ("left", 2, ["moderate", "upper lid droop"]),
    "thyroid_eye_disease": ("bilateral", 2, ["moderate", "lid retraction", "proptosis", "lid swelling"]),
    "strabismus": ("right", 2, ["moderate", "esotropia"]),
    "conjunctival_redness": ("bilateral", 2, ["moderate", "conjunctival injection"]),
    "periocular_tumour": ("left", 2, ["moderate", "nodular lesion", "lower lid", "central ulceration"]),
}


def showcase_rows(age: int = 55, sex: str = "female") -> list[dict]:
    return [{"disease": d, "laterality": lat, "severity": sev, "findings": f, "age": age, "sex": sex}
            for d, (lat, sev, f) in SHOWCASE.items()]


def _save_png(image, uri: str, settings) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    storage.write_bytes(uri, buffer.getvalue(), settings)
    return uri


def write_sample_grid(generator_uri: str, config: Config, per_disease: int = 6, settings=None) -> str:
    """`samples.png` beside the generator: txt2img, one row per disease, `per_disease` seeds."""
    from medeid.models.generator import load_pipeline

    generator = FaceGenerator(load_pipeline(generator_uri, settings), config.mema.steps, config.mema.guidance)
    rows = showcase_rows()
    images = [list(generator.generate([prompt(r, config.generator.prompt_template)] * per_disease,
                                      list(range(per_disease)))) for r in rows]
    grid = image_grid(images, [r["disease"] for r in rows], [f"seed {s}" for s in range(per_disease)])
    return _save_png(grid, storage.join(generator_uri, "samples.png"), settings)


def compare_strategies(generator: FaceGenerator, template: str, sources: list[tuple[np.ndarray, np.ndarray | None]],
                       seed: int = 0) -> tuple[list[list[np.ndarray]], list[str], list[str]]:
    """Rows: the real source photo, then each strategy; columns: one condition per disease (same seed).

    `sources[i]` is a real photo with disease i's showcase condition and its lesion mask (or None).
    """
    rows = showcase_rows()
    prompts = [prompt(r, template) for r in rows]
    seeds = [seed] * len(rows)
    images = [[np.asarray(s) for s, _ in sources]]
    keep = [keep_region(generator.resolution, m) for _, m in sources]
    for strategy in STRATEGIES:
        images.append(list(generator.generate(prompts, seeds, strategy, [s for s, _ in sources], keep)))
    return images, ["real source"] + list(STRATEGIES), [r["disease"] for r in rows]
