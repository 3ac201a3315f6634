"""Pretrain MeMa's base generator: Stable Diffusion's role, at the scale of the synthetic world.

The paper starts from Stable Diffusion, pretrained on a large population, and fine-tunes it on the
hospital's patients. Here the base is the tiny pipeline (the same diffusers classes) trained from
scratch on a *public population*: the same synthetic world drawn from another cohort seed, so none
of the hospital's patients is in it. It is built once by `jobs/pretrain_generator.py` (minutes on one
GPU, hours on two CPU cores), stored as a versioned artefact (`medeid/models/generator_base/`, its
provenance in `generator.json`), and fine-tuned with LoRA on the hospital's archive by
`jobs/train_generator.py` on Ray Train, as a real run fine-tunes SD 1.5.

One process, no Ray: the machine that builds the base (one GPU) may have nothing else.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from medeid.mema.prompts import prompt
from medeid.models.generator import (
    TinyGeneratorConfig,
    build_tiny_pipeline,
    load_pipeline,
    resolve_uri,
    weights_version,
)
from medeid.pixels import to_signed

# The base draws the archive's 128 px photos directly; latents at 1/4 (32 x 32), the top UNet level
# convolutions only, cross-attention on the two below (16 x 16 and 8 x 8): ~0.5 s an image on 2 cores.
BASE_ARCHITECTURE = TinyGeneratorConfig(
    resolution=128, unet_channels=(32, 64, 128), vae_channels=(32, 64, 64), text_width=64, text_layers=2,
    down_blocks=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"))
POPULATION_SEED = 1001  # the public population's cohort seed: no hospital archive here is drawn from it
INFO_FILE = "generator.json"


@dataclass(frozen=True)
class BasePretrainConfig:
    patients: int = 10_000
    photos_per_patient: int = 2
    population_seed: int = POPULATION_SEED
    prompt_template: str = "a clinical photo of a {sex} patient aged {age_band} with {condition}"
    condition_dropout: float = 0.1  # empty prompts, for classifier-free guidance
    batch_size: int = 128
    vae_steps: int = 3000
    vae_lr: float = 2e-3
    unet_steps: int = 20_000
    lr: float = 1e-3
    warmup_steps: int = 200
    ema_decay: float = 0.999
    # Wall-clock caps: training stops at whichever of steps and seconds comes first, and the learning
    # rate follows the fraction of whichever is nearer its end (the steps done are recorded).
    vae_seconds: float = 90.0
    unet_seconds: float = 300.0
    seed: int = 0
    # Continue a base already built (its VAE kept, no VAE steps): a longer training in several sittings.
    init: str | None = None


def _render(row: dict) -> np.ndarray:
    from medeid.synth import render_row

    return render_row(row, BASE_ARCHITECTURE.resolution).image


def population(cfg: BasePretrainConfig, workers: int | None = None) -> tuple[np.ndarray, list[dict]]:
    """The public population's photos (N, R, R, 3) uint8 and their label rows, rendered in parallel."""
    from medeid.synth import cohort_rows

    rows = cohort_rows(cfg.patients, cfg.photos_per_patient, seed=cfg.population_seed)
    with ProcessPoolExecutor(workers or os.cpu_count()) as pool:
        images = list(pool.map(_render, rows, chunksize=64))
    return np.stack(images), rows


def _schedule(step: int, elapsed: float, steps: int, seconds: float, warmup: int) -> float:
    """Warm-up, then a cosine to zero over whichever budget is nearer its end."""
    done = min(1.0, max(step / steps, elapsed / seconds))
    return min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * done))


def _pretrain_vae(vae, pixels: torch.Tensor, cfg: BasePretrainConfig, rng: torch.Generator, log) -> dict:
    optimizer = torch.optim.AdamW(vae.parameters(), cfg.vae_lr)
    started, step, loss = time.monotonic(), 0, torch.zeros(())
    while step < cfg.vae_steps and time.monotonic() - started < cfg.vae_seconds:
        for group in optimizer.param_groups:
            group["lr"] = cfg.vae_lr * _schedule(step, time.monotonic() - started, cfg.vae_steps, cfg.vae_seconds,
                                                 cfg.warmup_steps)
        x = pixels[torch.randint(0, len(pixels), (cfg.batch_size,), generator=rng).to(pixels.device)]
        posterior = vae.encode(x).latent_dist
        reconstruction = vae.decode(posterior.sample()).sample
        loss = F.l1_loss(reconstruction, x) + F.mse_loss(reconstruction, x) + 1e-6 * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        if step % 500 == 0:
            log(f"vae step {step}: loss {loss.item():.4f} ({time.monotonic() - started:.0f} s)")
    return {"vae_steps": step, "vae_loss": round(float(loss.item()), 5), "vae_s": round(time.monotonic() - started, 1)}


@torch.no_grad()
def _posteriors(vae, pixels: torch.Tensor, chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    means, stds = [], []
    for i in range(0, len(pixels), chunk):
        posterior = vae.encode(pixels[i:i + chunk]).latent_dist
        means.append(posterior.mean)
        stds.append(posterior.std)
    return torch.cat(means), torch.cat(stds)


def pretrain_base(output_dir: str | Path, cfg: BasePretrainConfig = BasePretrainConfig(), device: str = "cpu",
                  log=print) -> dict:
    """Render the population, pretrain the VAE, then the UNet and text encoder (EMA weights kept), and
    write the pipeline (fp16 weights, `save_pretrained` layout) and `generator.json` to `output_dir`."""
    started = time.monotonic()
    torch.manual_seed(cfg.seed)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # the VAE's fp32 steps
    rng = torch.Generator().manual_seed(cfg.seed)
    images, rows = population(cfg)
    log(f"population: {len(images)} photos of {cfg.patients} patients (cohort seed {cfg.population_seed}), "
        f"{time.monotonic() - started:.0f} s")
    if cfg.init:
        pipe = load_pipeline(cfg.init).to(device)
        previous = json.loads((Path(resolve_uri(cfg.init)) / INFO_FILE).read_text())
        vae_figures = {k: previous[k] for k in ("vae_steps", "vae_loss", "vae_s")}
    else:
        pipe = build_tiny_pipeline(BASE_ARCHITECTURE, seed=cfg.seed).to(device)
    pixels = to_signed(images).to(device)
    if not cfg.init:
        vae_figures = _pretrain_vae(pipe.vae, pixels, cfg, rng, log)
    vae = pipe.vae.eval().requires_grad_(False)
    means, stds = _posteriors(vae, pixels)
    if not cfg.init:
        scaling = float(1.0 / means.pow(2).mean().sqrt())  # unit-variance latents, as SD's own factor gives
        vae.register_to_config(scaling_factor=scaling)
    scaling = vae.config.scaling_factor
    reconstruction = vae.decode(means[:64]).sample
    vae_figures["vae_l1"] = round(float(F.l1_loss(reconstruction, pixels[:64])), 5)
    log(f"vae: {vae_figures}")

    tokenizer = pipe.tokenizer
    ids = tokenizer([prompt(r, cfg.prompt_template) for r in rows], padding="max_length",
                    max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids.to(device)
    empty = tokenizer([""], padding="max_length", max_length=tokenizer.model_max_length,
                      return_tensors="pt").input_ids.to(device)
    unet, text_encoder, scheduler = pipe.unet.train(), pipe.text_encoder.train(), pipe.scheduler
    params = [*unet.parameters(), *text_encoder.parameters()]
    ema = [p.detach().clone() for p in params]
    optimizer = torch.optim.AdamW(params, cfg.lr, weight_decay=1e-2)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda"))
    alphas = scheduler.alphas_cumprod.to(device)
    unet_started, step, losses = time.monotonic(), 0, []
    while step < cfg.unet_steps and time.monotonic() - unet_started < cfg.unet_seconds:
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * _schedule(step, time.monotonic() - unet_started, cfg.unet_steps,
                                             cfg.unet_seconds, cfg.warmup_steps)
        batch = torch.randint(0, len(pixels), (cfg.batch_size,), generator=rng).to(device)
        latents = (means[batch] + stds[batch] * torch.randn(means[batch].shape, generator=rng).to(device)) * scaling
        batch_ids = ids[batch].clone()
        batch_ids[(torch.rand(len(batch), generator=rng) < cfg.condition_dropout).to(device)] = empty
        noise = torch.randn(latents.shape, generator=rng).to(device)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (len(batch),), generator=rng).to(device)
        alpha = alphas[timesteps].view(-1, 1, 1, 1)
        noisy = alpha.sqrt() * latents + (1 - alpha).sqrt() * noise  # scheduler.add_noise, on the device
        with autocast:
            predicted = unet(noisy, timesteps, text_encoder(batch_ids)[0]).sample
        loss = F.mse_loss(predicted.float(), noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - min(cfg.ema_decay, (1 + step) / (10 + step)))
        step += 1
        losses.append(loss.item()) if step % 50 == 0 else None
        if step % 1000 == 0:
            log(f"unet step {step}: loss {np.mean(losses[-20:]):.4f} ({time.monotonic() - unet_started:.0f} s)")
    with torch.no_grad():
        for p, averaged in zip(params, ema):
            p.copy_(averaged)
    unet_s = time.monotonic() - unet_started
    pipe.unet.eval(), pipe.text_encoder.eval()
    output_dir = Path(output_dir)
    pipe.to("cpu", torch.float16).save_pretrained(output_dir)  # fp16 on disk: loaders cast to their dtype
    earlier = [previous] if cfg.init else []  # the sittings before this one, oldest first
    sittings = [*(earlier[0].get("sittings") or [earlier[0]] if earlier else []),
                {"unet_steps": step, "unet_s": round(unet_s, 1), "batch_size": cfg.batch_size,
                 "unet_loss": round(float(np.mean(losses[-20:])), 5) if losses else None,
                 "device": torch.cuda.get_device_name() if device.startswith("cuda") else device}]
    info = {"version": weights_version(output_dir), "kind": "base (public synthetic population, from scratch)",
            "population": {"patients": cfg.patients, "photos": len(images), "cohort_seed": cfg.population_seed},
            "architecture": dataclasses.asdict(BASE_ARCHITECTURE), **vae_figures,
            "unet_steps": sum(s["unet_steps"] for s in sittings),
            "unet_s": round(sum(s["unet_s"] for s in sittings), 1),
            "unet_loss": sittings[-1]["unet_loss"], "continued_from": previous["version"] if cfg.init else None,
            "sittings": sittings, "device": sittings[-1]["device"], "torch": torch.__version__,
            "total_s": round(time.monotonic() - started, 1), "config": dataclasses.asdict(cfg)}
    (output_dir / INFO_FILE).write_text(json.dumps(info, indent=1))
    log(f"base generator {info['version']}: {step} UNet steps in {unet_s:.0f} s -> {output_dir}")
    return info
