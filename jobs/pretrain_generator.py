"""Build MeMa's base generator once: the tiny Stable Diffusion pipeline trained from scratch on a public
synthetic population (another cohort seed: none of the hospital's patients), standing in for SD 1.5.

    python jobs/pretrain_generator.py --output medeid/models/generator_base --device cuda   # minutes on one GPU

The result is a versioned artefact (fp16 weights in `save_pretrained` layout, provenance and figures in
`generator.json`, `samples.png`: one row per disease) that the demo preset names as `generator.base` and
fine-tunes with LoRA on the hospital's archive (`jobs/train_generator.py`, Ray Train). It runs in one
process without Ray: the machine that builds it may be a bare GPU box. On two CPU cores it runs too, as
long as it is given (`--unet-seconds`); the committed base was built on one GPU (README, Performance).
"""

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

from medeid.mema.generation import FaceGenerator
from medeid.mema.prompts import prompt
from medeid.mema.samples import showcase_rows
from medeid.models.generator import load_pipeline
from medeid.synth.contact_sheet import image_grid
from medeid.train.generator_base import BasePretrainConfig, pretrain_base

SAMPLE_STEPS, SAMPLE_GUIDANCE = 20, 3.0  # the demo's MeMa settings


def throughput(directory: Path, device: str, batch: int = 64, repeats: int = 3) -> dict:
    """txt2img images/s at the demo's sampling settings (fp16 on CUDA), after one warm-up call."""
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    pipe = load_pipeline(str(directory), dtype=dtype).to(device)
    generator = FaceGenerator(pipe, SAMPLE_STEPS, SAMPLE_GUIDANCE)
    prompts = [prompt(r, BasePretrainConfig.prompt_template) for r in showcase_rows()] * (batch // 6 + 1)
    generator.generate(prompts[:batch], list(range(batch)))
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeats):
        generator.generate(prompts[:batch], list(range(batch)))
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - started) / repeats
    return {"device": device, "dtype": str(dtype).removeprefix("torch."), "batch": batch, "steps": SAMPLE_STEPS,
            "images_per_s": round(batch / seconds, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, help="local folder for the pipeline")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    defaults = BasePretrainConfig()
    for field in ("patients", "batch_size", "vae_steps", "unet_steps", "vae_seconds", "unet_seconds"):
        parser.add_argument(f"--{field.replace('_', '-')}", type=type(getattr(defaults, field)),
                            default=getattr(defaults, field))
    parser.add_argument("--init", help="continue this base (a folder or medeid:<name>) instead of starting afresh")
    parser.add_argument("--no-throughput", action="store_true", help="skip the images/s measurement")
    parser.add_argument("--per-disease", type=int, default=8, help="samples per disease in samples.png")
    args = parser.parse_args()
    cfg = dataclasses.replace(defaults, **{f: getattr(args, f) for f in (
        "patients", "batch_size", "vae_steps", "unet_steps", "vae_seconds", "unet_seconds")}, init=args.init)
    output = Path(args.output)
    info = pretrain_base(output, cfg, device=args.device, log=lambda m: print(f"[pretrain_generator] {m}", flush=True))

    generator = FaceGenerator(load_pipeline(str(output)), SAMPLE_STEPS, SAMPLE_GUIDANCE)
    rows = showcase_rows()
    seeds = list(range(args.per_disease))
    images = [list(generator.generate([prompt(r, cfg.prompt_template)] * len(seeds), seeds)) for r in rows]
    image_grid(images, [r["disease"] for r in rows], [f"seed {s}" for s in range(args.per_disease)]).save(
        output / "samples.png")
    if not args.no_throughput:
        info["throughput"] = throughput(output, args.device)
    (output / "generator.json").write_text(json.dumps(info, indent=1))
    figures = {k: info.get(k) for k in ("version", "unet_steps", "vae_l1", "throughput")}
    print(f"[pretrain_generator] {json.dumps(figures)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
