"""Is what a grid shows across the eyes the model's, or the donor's? MedSem-DeID draws a donor of its
bank with the photo's condition and pose; the synthetic world's renderer can draw exactly that (the
donor's paired training target, `medeid.synth.swap.donor_swap`). Where the new face differs from it,
the model made the difference; where both show a band, it is the donor's own face (the band seen in
the evaluation grids until 2026-12-03 was the world's beard, a flat tint over the lower face; now
drawn as a beard).

For unseen patients (a cohort of their own) and the donor at a given rank of each photo's donor
choices (0: the nearest skin tone), per photo:
- the eye band's step: the eye region's mean luminance less the cheeks' (`model.skin_patch`), for
  the photo, the posed donor, the new face and the renderer's target;
- `excess`: the new face's step less the target's (0: the band is the donor's, as the world draws it);
- `residual`: what the decoder changes of the posed donor inside the eye region (mean absolute, grey levels);
- `eye_mad`: the new face against the target, mean absolute difference inside the eye region.

    python -m medeid.evaluate.donor_fidelity --model demo-output/models/deid --output band.png
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
from PIL import Image

from medeid import storage
from medeid.models.deid.api import MedSemDeID
from medeid.models.deid.donors import bank_donor
from medeid.models.deid.model import skin_patch
from medeid.models.identity import centred_crop
from medeid.models.medical import eye_box
from medeid.passwords import Secret, derive_model_key
from medeid.pixels import to_signed, to_uint8
from medeid.synth.cohort import cohort_rows, render_row
from medeid.synth.swap import donor_swap

COHORT_SEED = 4242  # patients of their own: no archive's
RANKS = (0, 63, 127)  # the nearest skin tone, the middle and the far end of the default 128 choices


def band_step(images: torch.Tensor) -> np.ndarray:
    """(N,) the eye region's mean luminance less the cheeks', images (N, 3, R, R) in [-1, 1]."""
    (rows, cols), (skin_rows, skin_cols) = eye_box(images.shape[-1]), skin_patch(images.shape[-1])
    luminance = images.mean(1)
    return (luminance[:, rows, cols].mean((1, 2)) - luminance[:, skin_rows, skin_cols].mean((1, 2))).numpy()


@torch.no_grad()
def donor_fidelity(model: MedSemDeID, patients: int = 40, ranks: tuple[int, ...] = RANKS,
                   password: str = "donor-fidelity") -> dict:
    """Per donor rank: the figures above (arrays over the photos, and their means) and, per photo,
    [photo, donor as drawn for it, posed donor, new face, target] as uint8 crops for a grid."""
    net, size = model.net, model.resolution
    seed = net.config.donor_seed
    if seed is None:
        raise ValueError("this model's donors cannot be drawn again (no donor_seed): nothing to compare with")
    rows = cohort_rows(patients, 1, seed=COHORT_SEED)
    photos = np.stack([centred_crop(render_row(r, int(r.get("width") or size)).image, size) for r in rows])
    x = to_signed(photos)
    reading = net.medical_reading(x)
    choices = net.donor_choices(torch.from_numpy(photos))
    key = derive_model_key(Secret(password), net.config.key_dim)
    vectors = torch.from_numpy(np.stack([key.vector] * len(rows)))
    (eye_rows, eye_cols) = eye_box(size)
    figures = {"ranks": {}}
    for rank in ranks:
        donors = choices[:, min(rank, choices.shape[1] - 1)]
        faces = model.donor_faces(reading, donors, [key] * len(rows))
        out = net(x, vectors, faces, reading=reading)
        people = [bank_donor(d, seed) for d in donors.tolist()]
        target = to_signed(np.stack([donor_swap(r, p.identity, p.camera, size)[0] for r, p in zip(rows, people)]))
        steps = {name: band_step(images) for name, images in
                 (("photo", x), ("posed donor", out["warped"]), ("new face", out["face"]), ("target", target))}
        excess = steps["new face"] - steps["target"]
        figures["ranks"][rank] = {
            "steps": steps, "excess": excess, "mean_excess": float(excess.mean()),
            "mean_abs_excess": float(np.abs(excess).mean()),
            "residual": float((out["face"] - out["warped"])[:, :, eye_rows, eye_cols].abs().mean() * 127.5),
            "eye_mad": float((out["face"] - target)[:, :, eye_rows, eye_cols].abs().mean() * 127.5),
            "crops": np.stack([to_uint8(t) for t in (x, faces, out["warped"], out["face"], target)], 1)}
    return figures


def summary(figures: dict) -> str:
    lines = ["(band steps in [-1, 1] units; changes in grey levels of 255)", "",
             "| donor rank | band step: photo | posed donor | new face | target | new face - target (mean, mean abs) "
             "| decoder's change in the eyes | new face vs target in the eyes |", "| ---: " * 8 + "|"]
    for rank, f in figures["ranks"].items():
        s = f["steps"]
        lines.append(f"| {rank} | {s['photo'].mean():+.3f} | {s['posed donor'].mean():+.3f} "
                     f"| {s['new face'].mean():+.3f} | {s['target'].mean():+.3f} "
                     f"| {f['mean_excess']:+.4f}, {f['mean_abs_excess']:.4f} "
                     f"| {f['residual']:.1f} | {f['eye_mad']:.1f} |")
    return "\n".join(lines)


def grid(figures: dict, rank: int, count: int = 8) -> Image.Image:
    """Rows: the photos with the darkest donors at `rank`; columns: photo, donor as drawn, posed donor,
    new face, the renderer's target."""
    crops = figures["ranks"][rank]["crops"]
    darkest = np.argsort(crops[:, 1].mean((1, 2, 3)))[:count]
    return Image.fromarray(np.concatenate([np.concatenate(list(crops[i]), 1) for i in darkest], 0))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a MedSem-DeID folder or S3 prefix")
    parser.add_argument("--output", help="a PNG grid of the darkest donors at the last rank")
    parser.add_argument("--patients", type=int, default=40)
    args = parser.parse_args()
    uri = args.model
    figures = donor_fidelity(MedSemDeID.from_uri(uri, storage.S3Settings.from_env() if storage.is_s3(uri) else None),
                             args.patients)
    print(summary(figures))
    if args.output:
        grid(figures, max(figures["ranks"])).save(args.output)
        print(f"grid (photo | donor as drawn | posed donor | new face | renderer's target): {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
