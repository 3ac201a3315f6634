"""How MeMa draws a face: the three generation strategies over one fine-tuned pipeline.

- txt2img: the fine-tuned model alone, from the text condition;
- img2img: a real photo with the same condition, re-drawn at `strength` (0 keeps it, 1 ignores it);
- inpaint: a real photo's face re-drawn while its diagnostic region (the eye region, brows to lower
  lids, and the tumour mask) is kept, pixel for pixel, through a feathered composite.

Each row draws from its own seeded generator, so an image depends on its row and seed only, never
on which other rows share its batch: a re-run reproduces every attempt.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

STRATEGIES = ("txt2img", "img2img", "inpaint")
# Rows of the aligned face that hold the eye signs (brows to lower lids), as fractions of its height.
# Narrower than the medical model's band on purpose: everything kept is a real patient's.
EYE_ROWS = (0.32, 0.54)
FEATHER_PX = 3  # edge of the kept region, blended over this many pixels


def keep_region(size: int, lesion_mask: np.ndarray | None) -> np.ndarray:
    """Float mask (size, size) in [0, 1], 1 where inpainting keeps the source: the eye region and the
    lesion mask if there is one; feathered outwards."""
    core = np.zeros((size, size), np.float32)
    core[round(EYE_ROWS[0] * size):round(EYE_ROWS[1] * size)] = 1.0
    if lesion_mask is not None and lesion_mask.any():  # a lesion may reach past the eye rows
        lesion = cv2.resize(lesion_mask.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST)
        core = np.maximum(core, lesion.astype(np.float32))
    # Feathered outwards only: every pixel of the region itself is kept whole.
    grown = cv2.dilate(core, np.ones((3, 3), np.uint8), iterations=FEATHER_PX)
    return np.maximum(core, cv2.GaussianBlur(grown, (0, 0), FEATHER_PX / 2))


class FaceGenerator:
    """One fine-tuned Stable Diffusion pipeline behind the three strategies (components shared)."""

    def __init__(self, pipe, steps: int = 25, guidance: float = 3.0, strength: float = 0.75):
        from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline

        self.pipes = {"txt2img": pipe, "img2img": StableDiffusionImg2ImgPipeline(**pipe.components),
                      "inpaint": StableDiffusionInpaintPipeline(**pipe.components)}
        for p in self.pipes.values():
            p.set_progress_bar_config(disable=True)
        self.steps, self.guidance, self.strength = steps, guidance, strength
        self.resolution = int(pipe.unet.config.sample_size * pipe.vae_scale_factor)
        self.device = pipe.device

    def generate(self, prompts: list[str], seeds: list[int], strategy: str = "txt2img",
                 sources: list[np.ndarray] | None = None, keep: list[np.ndarray] | None = None) -> np.ndarray:
        """uint8 images (N, R, R, 3) at the pipeline's resolution R.

        Args:
            sources: img2img and inpaint: RGB uint8 real photos with the same condition (any size).
            keep: inpaint: float masks (R, R), 1 where the source is kept (see `keep_region`).
        """
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; expected one of {STRATEGIES}")
        if strategy != "txt2img" and (sources is None or len(sources) != len(prompts)):
            raise ValueError(f"{strategy} needs one source photo per prompt")
        if not prompts:
            return np.zeros((0, self.resolution, self.resolution, 3), np.uint8)
        generators = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]
        common = {"prompt": list(prompts), "num_inference_steps": self.steps, "guidance_scale": self.guidance,
                  "generator": generators, "output_type": "np"}
        if strategy == "txt2img":
            out = self.pipes["txt2img"](height=self.resolution, width=self.resolution, **common).images
        else:
            resized = np.stack([cv2.resize(s, (self.resolution, self.resolution), interpolation=cv2.INTER_AREA)
                                for s in sources])
            pixels = torch.from_numpy(resized).permute(0, 3, 1, 2).float() / 255.0
            if strategy == "img2img":
                out = self.pipes["img2img"](image=pixels, strength=self.strength, **common).images
            else:
                masks = torch.from_numpy(1.0 - np.stack(keep))[:, None]  # white = re-draw, as diffusers wants
                out = self.pipes["inpaint"](image=pixels, mask_image=masks, strength=self.strength,
                                            height=self.resolution, width=self.resolution, **common).images
                # The kept region is the source's own pixels, not the VAE's reconstruction of them.
                weight = np.stack(keep)[..., None]
                out = out * (1 - weight) + (resized / 255.0) * weight
        return (np.clip(out, 0, 1) * 255).round().astype(np.uint8)
