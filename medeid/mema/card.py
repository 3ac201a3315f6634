"""MeMa's dataset card: the figures a built MeMa is judged by, and a README with pictures.

Reads what a build wrote under its root (a local folder or `s3://bucket/prefix`):
    conditions/*.parquet   requested condition rows (schema.MEMA_CONDITION)
    shards/*.parquet       released images (schema.MEMA_IMAGE)
    rejections/*.parquet   rejected generation attempts (schema.MEMA_REJECTION)
    audit/*.parquet        evaluator recogniser's privacy audit (schema.MEMA_AUDIT); may be missing
    private/attacks/       the eye-band attackers' audit (schema.MEMA_ATTACKS, auditor.json); may be missing
    statistics.json        the real cohort's statistics (CohortStatistics)
and writes under `<root>/card/`:
    README.md              the DESIGN quality bars with PASS/FAIL (one privacy bar per kind of attacker),
                           the funnel, the distributions, rejection reasons, config and package versions
    figures.json           the numbers of `card_figures`
    similarity.png, distributions.png, funnel.png, samples.png, mema_seg.png (if any mask),
    (private/attacks/nearest_real.png after the attack audit: released images beside real photos, for
    auditors only; it shows real patients, so it stays in private/, which never ships)

Only small columns are read to count; image bytes are read for the few pictured images alone.
The modules: card_tables (reading), card_numbers (figures and bars), card_pictures, card_markdown.
"""

from __future__ import annotations

import json

from medeid import storage
from medeid.mema.card_markdown import markdown
from medeid.mema.card_numbers import figures_of
from medeid.mema.attack_audit import ATTACKS
from medeid.mema.card_markdown import PRIVATE_PICTURES
from medeid.mema.card_pictures import (distributions_png, funnel_png, mema_seg_png, nearest_real_png, samples_png,
                                      similarity_png)
from medeid.mema.card_tables import CARD, load_tables


def card_figures(root: str, settings: storage.S3Settings | None = None) -> dict:
    """The numbers of the dataset card of the MeMa built under `root` (JSON-ready)."""
    return figures_of(load_tables(root, settings))


def write_card(root: str, *, config: dict, versions: dict, settings: storage.S3Settings | None = None,
               samples_per_condition: int = 6) -> str:
    """Write the dataset card of the MeMa built under `root` to `<root>/card/`; returns README.md's URI.

    Args:
        config: the build's resolved config, shown as YAML.
        versions: package -> version, shown as a table.
        samples_per_condition: released images per disease in samples.png.
    """
    tables = load_tables(root, settings)
    figures = figures_of(tables)
    card = storage.join(root, CARD)
    # 1. Pictures; MeMa-Seg's only when some image has a mask, the nearest real photos only after the attack audit.
    pictures = {
        "similarity.png": similarity_png(tables, figures),
        "nearest_real.png": nearest_real_png(tables, figures, settings),
        "distributions.png": distributions_png(figures),
        "funnel.png": funnel_png(figures),
        "samples.png": samples_png(tables, samples_per_condition),
        "mema_seg.png": mema_seg_png(tables, samples_per_condition),
    }
    pictures = {name: data for name, data in pictures.items() if data is not None}
    for name, data in pictures.items():
        # Real patients' photos stay beside the other private audit files: the card ships, private/ never does.
        folder = storage.join(root, ATTACKS) if name in PRIVATE_PICTURES else card
        storage.write_bytes(storage.join(folder, name), data, settings)
    # 2. The numbers, for machines; 3. the README, for people.
    storage.write_bytes(storage.join(card, "figures.json"), json.dumps(figures, indent=1).encode(), settings)
    readme = storage.join(card, "README.md")
    storage.write_bytes(readme, markdown(figures, config, versions, list(pictures)).encode(), settings)
    return readme
