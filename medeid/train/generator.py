"""Fine-tune the MeMa generator (Stable Diffusion, diffusers) on the real patients with Ray Train.

Each worker loads the base pipeline (a diffusers folder or S3 prefix; or, in the demo, the tiny
pipeline whose VAE it first pretrains on the archive, standing in for pretrained weights), then
trains the UNet to predict noise under text conditions built from the photo's labels: LoRA
adapters (peft) by default, or the whole UNet and text encoder. Checkpoints hold diffusers formats
(LoRA safetensors, or `save_pretrained` folders) plus the optimiser state, on the run's storage;
the driver assembles the final pipeline from the last one and writes it with `save_pretrained`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import ray
import ray.train
import torch
import torch.nn.functional as F
from torch import nn

from medeid import codecs, storage
from medeid.config import GeneratorConfig
from medeid.mema.prompts import prompt
from medeid.models.generator import build_tiny_pipeline, load_pipeline, weights_version
from medeid.models.identity import centred_crop
from medeid.pipelines.synthetic_archive import metadata_dataset
from medeid.pixels import to_signed
from medeid.train.data import split_of
from medeid.train.harness import checkpoint_folder, is_rank_zero, run_training

TRAINER_STATE = "trainer_state.pt"
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]  # the attention projections, as diffusers' own LoRA scripts
INFO_FILE = "generator.json"


def generator_examples(batch: pa.Table, *, root: str, size: int, template: str,
                       settings: storage.S3Settings | None = None) -> dict:
    """Ray Data map_batches: archive rows -> images at the generator's resolution and their prompts."""
    rows = batch.to_pylist()
    images = [centred_crop(codecs.decode(storage.read_bytes(storage.join(root, r["photo_key"]), settings)), size)
              for r in rows]
    return {"image": np.stack(images), "prompt": np.array([prompt(r, template) for r in rows], dtype=object),
            "patient_id": np.array([r["patient_id"] for r in rows], dtype=object)}


def generator_dataset(archive_root: str, cfg: GeneratorConfig, settings: storage.S3Settings | None = None):
    """The training patients' photos and prompts; the held-out patients are left for the test on real."""
    held_out = cfg.held_out
    return metadata_dataset(archive_root, settings).filter(
        lambda row: split_of(row["patient_id"], held_out) == "train").map_batches(
        generator_examples, batch_size=64, batch_format="pyarrow",
        fn_kwargs={"root": archive_root, "size": cfg.resolution, "template": cfg.prompt_template,
                   "settings": settings})


def base_pipeline(cfg: GeneratorConfig, settings: storage.S3Settings | None = None):
    """The pipeline fine-tuning starts from; the same weights on every worker."""
    if cfg.base:
        return load_pipeline(cfg.base, settings)
    from medeid.models.generator import TinyGeneratorConfig

    return build_tiny_pipeline(TinyGeneratorConfig(resolution=cfg.resolution), seed=cfg.seed)


class Reconstruction(nn.Module):
    """The VAE's encode-sample-decode as one forward, so DDP averages its gradients."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, x):
        posterior = self.vae.encode(x).latent_dist
        return self.vae.decode(posterior.sample()).sample, posterior.kl().mean()


class Denoiser(nn.Module):
    """Text encoder and UNet in one module, so one DDP wrapper syncs whatever of them trains."""

    def __init__(self, unet, text_encoder):
        super().__init__()
        self.unet, self.text_encoder = unet, text_encoder

    def forward(self, noisy_latents, timesteps, input_ids):
        return self.unet(noisy_latents, timesteps, self.text_encoder(input_ids)[0]).sample


def add_lora(unet, rank: int) -> None:
    from peft import LoraConfig

    unet.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=LORA_TARGETS))


def lora_state(unet) -> dict:
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    return convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))


def save_weights(pipe, directory: str | Path, cfg: GeneratorConfig, vae_trained: bool) -> None:
    """What fine-tuning changed, in diffusers formats: LoRA safetensors or save_pretrained folders."""
    from diffusers import StableDiffusionPipeline

    directory = Path(directory)
    if cfg.finetune == "lora":
        StableDiffusionPipeline.save_lora_weights(directory / "lora", unet_lora_layers=lora_state(pipe.unet),
                                                  safe_serialization=True)
    else:
        pipe.unet.save_pretrained(directory / "unet")
        pipe.text_encoder.save_pretrained(directory / "text_encoder")
    if vae_trained:
        pipe.vae.save_pretrained(directory / "vae")


def load_trained_vae(pipe, directory: str | Path) -> None:
    """A checkpoint's pretrained VAE (tiny base only) and its measured latent scale, if it has one."""
    from diffusers import AutoencoderKL

    if (Path(directory) / "vae").exists():
        trained = AutoencoderKL.from_pretrained(Path(directory) / "vae")
        pipe.vae.load_state_dict(trained.state_dict())
        pipe.vae.register_to_config(scaling_factor=trained.config.scaling_factor)


def load_weights(pipe, directory: str | Path, cfg: GeneratorConfig) -> None:
    """The inverse of `save_weights`, onto a base pipeline."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    directory = Path(directory)
    load_trained_vae(pipe, directory)
    if cfg.finetune == "lora":
        pipe.load_lora_weights(str(directory / "lora"), adapter_name="mema")
    else:
        pipe.unet.load_state_dict(UNet2DConditionModel.from_pretrained(directory / "unet").state_dict())
        pipe.text_encoder.load_state_dict(CLIPTextModel.from_pretrained(directory / "text_encoder").state_dict())


def _batches(shard, batch_size: int):
    return shard.iter_batches(batch_size=batch_size, batch_format="numpy", drop_last=True,
                              local_shuffle_buffer_size=1024)


def _all_mean(value: float, device) -> float:
    tensor = torch.tensor([value], device=device, dtype=torch.float64)
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(tensor)
        tensor /= torch.distributed.get_world_size()
    return float(tensor.item())


def pretrain_vae(pipe, shard, epochs: int, batch_size: int, lr: float, device) -> float:
    """Tiny base only: teach the VAE to reconstruct faces (L1 + L2 and a light KL), then set the
    latent scaling factor so the UNet sees unit-variance latents, as SD's own factor does."""
    from ray.train.torch import prepare_model

    model = prepare_model(Reconstruction(pipe.vae))
    optimizer = torch.optim.AdamW(model.parameters(), lr)
    loss = torch.zeros(())
    for epoch in range(epochs):
        for batch in _batches(shard, batch_size):
            x = to_signed(batch["image"]).to(device)
            reconstruction, kl = model(x)
            loss = F.l1_loss(reconstruction, x) + F.mse_loss(reconstruction, x) + 1e-6 * kl
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if is_rank_zero():
            print(f"[train_generator] vae epoch {epoch + 1}/{epochs} loss {loss.item():.4f}", flush=True)
    vae = pipe.vae.eval().requires_grad_(False)
    with torch.no_grad():
        squares = [vae.encode(to_signed(b["image"]).to(device)).latent_dist.mode().pow(2).mean().item()
                   for b, _ in zip(_batches(shard, batch_size), range(4))]
    scaling = 1.0 / np.sqrt(_all_mean(float(np.mean(squares)), device))
    vae.register_to_config(scaling_factor=float(scaling))
    return float(loss.item())


def train_loop_per_worker(config: dict) -> None:
    from ray.train.torch import get_device, prepare_model

    cfg = GeneratorConfig(**config["generator"])
    settings = config["settings"]
    torch.manual_seed(cfg.seed + ray.train.get_context().get_world_rank())
    if cfg.threads_per_worker:
        torch.set_num_threads(cfg.threads_per_worker)
    device = get_device()
    pipe = base_pipeline(cfg, settings).to(device)
    shard = ray.train.get_dataset_shard("train")
    checkpoint = ray.train.get_checkpoint()
    state, vae_trained = None, cfg.base is None
    if checkpoint:
        with checkpoint_folder(checkpoint) as directory:
            state = torch.load(os.path.join(directory, TRAINER_STATE), map_location="cpu", weights_only=True)
            if cfg.finetune == "lora":
                from peft.utils import set_peft_model_state_dict

                add_lora(pipe.unet, cfg.lora_rank)
                set_peft_model_state_dict(pipe.unet, state["lora"])  # peft's own keys, not diffusers'
                load_trained_vae(pipe, directory)
            else:
                load_weights(pipe, directory, cfg)
    elif vae_trained and cfg.vae_pretrain_epochs:
        pretrain_vae(pipe, shard, cfg.vae_pretrain_epochs, cfg.batch_size, 2e-3, device)

    pipe.vae.requires_grad_(False).eval()
    if cfg.finetune == "lora":
        if state is None:
            add_lora(pipe.unet, cfg.lora_rank)
        pipe.text_encoder.requires_grad_(False)
    elif cfg.finetune != "full":
        raise ValueError(f"generator.finetune must be lora or full, got {cfg.finetune!r}")
    model = prepare_model(Denoiser(pipe.unet, pipe.text_encoder))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, cfg.lr, weight_decay=1e-2)
    ema = None
    if cfg.ema:
        from diffusers.training_utils import EMAModel

        ema = EMAModel(params, decay=cfg.ema_decay)
    start_epoch, step = 0, 0
    if state:
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, step = state["epoch"] + 1, state["step"]
        if ema is not None and "ema" in state:
            ema.load_state_dict(state["ema"])
    amp = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(cfg.mixed_precision)
    use_amp = amp is not None and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp == torch.float16)
    tokenizer, scheduler = pipe.tokenizer, pipe.scheduler
    empty = tokenizer([""], padding="max_length", max_length=tokenizer.model_max_length,
                      return_tensors="pt").input_ids.to(device)
    scaling = pipe.vae.config.scaling_factor
    rng = torch.Generator(device="cpu").manual_seed(cfg.seed * 1000 + ray.train.get_context().get_world_rank())

    for epoch in range(start_epoch, cfg.epochs):
        started, losses = time.monotonic(), []
        model.train()
        for batch in _batches(shard, cfg.batch_size):
            with torch.no_grad():
                latents = pipe.vae.encode(to_signed(batch["image"]).to(device)).latent_dist.sample() * scaling
                ids = tokenizer(list(batch["prompt"]), padding="max_length", max_length=tokenizer.model_max_length,
                                truncation=True, return_tensors="pt").input_ids.to(device)
            # Classifier-free guidance needs the model to also know the unconditioned face.
            dropped = torch.rand(len(ids), generator=rng) < cfg.condition_dropout
            ids[dropped.to(device)] = empty
            noise = torch.randn(latents.shape, generator=rng).to(device)
            timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (len(latents),), generator=rng).to(device)
            noisy = scheduler.add_noise(latents, noise, timesteps)
            with torch.autocast(device.type, dtype=amp or torch.float32, enabled=use_amp):
                loss = F.mse_loss(model(noisy, timesteps, ids).float(), noise)
            optimizer.zero_grad()
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if ema is not None:
                ema.step(params)
            step += 1
            losses.append(loss.item())
        metrics = {"epoch": epoch, "step": step, "start_epoch": start_epoch,
                   "loss": float(np.mean(losses)) if losses else float("nan"), "epoch_s": time.monotonic() - started}
        if is_rank_zero():
            print(f"[train_generator] epoch {epoch + 1}/{cfg.epochs} loss {metrics['loss']:.4f} "
                  f"({metrics['epoch_s']:.0f} s, step {step})", flush=True)
        _report(pipe, cfg, vae_trained, metrics, optimizer, ema, params, epoch, step)
        if config.get("fail_after_epoch") == epoch and state is None:
            raise RuntimeError(f"injected failure after epoch {epoch}")


def _report(pipe, cfg, vae_trained, metrics, optimizer, ema, params, epoch, step) -> None:
    with tempfile.TemporaryDirectory() as directory:
        checkpoint = None
        if is_rank_zero():
            if ema is not None:  # checkpoints hold the averaged weights; training goes on with the raw ones
                ema.store(params)
                ema.copy_to(params)
            save_weights(pipe, directory, cfg, vae_trained)
            if ema is not None:
                ema.restore(params)
            state = {"optimizer": optimizer.state_dict(), "epoch": epoch, "step": step}
            if cfg.finetune == "lora":
                from peft.utils import get_peft_model_state_dict

                state["lora"] = get_peft_model_state_dict(pipe.unet)
            if ema is not None:
                state["ema"] = ema.state_dict()
            torch.save(state, os.path.join(directory, TRAINER_STATE))
            checkpoint = ray.train.Checkpoint.from_directory(directory)
        ray.train.report(metrics, checkpoint=checkpoint)


def assemble_pipeline(cfg: GeneratorConfig, checkpoint_dir: str | Path, settings=None):
    """The base pipeline with a checkpoint's weights applied, LoRA fused into the UNet."""
    pipe = base_pipeline(cfg, settings)
    load_weights(pipe, checkpoint_dir, cfg)
    if cfg.finetune == "lora":
        pipe.fuse_lora()
        pipe.unload_lora_weights()
    return pipe


def train_generator(archive_root: str, output_uri: str, runs_uri: str, cfg: GeneratorConfig, *,
                    name: str = "generator", settings: storage.S3Settings | None = None,
                    fail_after_epoch: int | None = None) -> dict:
    """Fine-tune on the training patients' photos and write the pipeline to `output_uri` (save_pretrained layout,
    plus `lora/` for LoRA runs and `generator.json` with the figures)."""
    started = time.monotonic()
    photos = generator_dataset(archive_root, cfg, settings).materialize()
    n_photos = photos.count()
    n_patients = len(set(photos.unique("patient_id")))
    config = {"generator": dataclasses.asdict(cfg), "settings": settings, "fail_after_epoch": fail_after_epoch}
    result = run_training(train_loop_per_worker, config, name=name, storage_uri=runs_uri, datasets={"train": photos},
                          num_workers=cfg.num_workers, use_gpu=cfg.use_gpu, settings=settings)
    metrics = dict(result.metrics)
    with result.checkpoint.as_directory() as checkpoint_dir, tempfile.TemporaryDirectory() as out:
        pipe = assemble_pipeline(cfg, checkpoint_dir, settings)
        pipe.save_pretrained(out)
        if cfg.finetune == "lora":
            storage.copy_tree(os.path.join(checkpoint_dir, "lora"), storage.join(output_uri, "lora"), settings)
        info = {"version": weights_version(out), "base": cfg.base or "tiny (built and VAE-pretrained here)",
                "finetune": cfg.finetune, "resolution": cfg.resolution, "prompt_template": cfg.prompt_template,
                "epochs": metrics["epoch"] + 1, "steps": metrics["step"], "final_loss": metrics["loss"],
                "start_epoch": metrics["start_epoch"], "archive": archive_root, "photos": n_photos,
                "held_out": cfg.held_out, "patients": n_patients,
                "train_s": round(time.monotonic() - started, 1), "config": dataclasses.asdict(cfg)}
        Path(out, INFO_FILE).write_text(json.dumps(info, indent=1))
        storage.copy_tree(out, output_uri, settings)
    return {**info, "output": output_uri, "run": storage.join(runs_uri, name)}
