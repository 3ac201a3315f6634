"""MeMa's base generator: pretrained from scratch on a public population, shipped as a versioned artefact."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from medeid.config import load_config
from medeid.mema.prompts import prompt
from medeid.models.generator import build_tiny_pipeline, load_pipeline, resolve_uri, weights_version
from medeid.pixels import to_signed
from medeid.synth import cohort_rows, render_row
from medeid.train.generator_base import BASE_ARCHITECTURE, POPULATION_SEED, BasePretrainConfig, pretrain_base

TEMPLATE = BasePretrainConfig.prompt_template


def test_pretraining_writes_a_loadable_fp16_pipeline_with_its_provenance(tmp_path):
    cfg = BasePretrainConfig(patients=3, batch_size=2, vae_steps=2, unet_steps=3, warmup_steps=1)
    info = pretrain_base(tmp_path / "base", cfg, log=lambda _: None)
    assert (info["vae_steps"], info["unet_steps"]) == (2, 3)
    assert info["population"] == {"patients": 3, "photos": 6, "cohort_seed": POPULATION_SEED}
    assert info["version"] == weights_version(tmp_path / "base")
    assert json.loads((tmp_path / "base" / "generator.json").read_text())["version"] == info["version"]
    stored = load_file(tmp_path / "base" / "unet" / "diffusion_pytorch_model.safetensors")
    assert {t.dtype for t in stored.values()} == {torch.float16}  # half the bytes in the repository
    pipe = load_pipeline(str(tmp_path / "base"))
    assert pipe.unet.dtype == torch.float32 and pipe.vae.config.scaling_factor != 0.18215  # measured, not SD's
    fresh = build_tiny_pipeline(BASE_ARCHITECTURE, seed=cfg.seed).unet.state_dict()
    assert any(not torch.allclose(v.float(), fresh[k], atol=1e-3) for k, v in pipe.unet.state_dict().items())


def test_packaged_names_resolve_to_the_shipped_folder_or_fail_clearly():
    assert resolve_uri("s3://bucket/models/sd") == "s3://bucket/models/sd"
    with pytest.raises(FileNotFoundError, match="names no pipeline shipped with medeid"):
        resolve_uri("medeid:no_such_base")


@pytest.fixture(scope="module")
def shipped():
    base = load_config("demo").generator.base
    return base, load_pipeline(base), json.loads((__import__("pathlib").Path(resolve_uri(base)) /
                                                  "generator.json").read_text())


def test_the_demo_fine_tunes_the_shipped_base_its_card_describes(shipped):
    base, pipe, card = shipped
    assert base.startswith("medeid:")
    assert card["version"] == weights_version(resolve_uri(base))  # the weights are the ones the card measured
    assert card["architecture"] == json.loads(json.dumps(dataclasses.asdict(BASE_ARCHITECTURE)))
    assert card["population"]["cohort_seed"] not in {load_config(p).archive.seed for p in ("demo", "paper")}
    assert load_config("demo").generator.resolution == pipe.unet.config.sample_size * pipe.vae_scale_factor == 128


def test_the_shipped_base_has_learnt_this_worlds_faces(shipped):
    """Against the same architecture untrained: its VAE reconstructs a photo of people it never saw, and
    its UNet predicts the noise on them far better."""
    _, pipe, _ = shipped
    rows = cohort_rows(4, 1, seed=12345)  # a cohort neither the base nor any archive here is drawn from
    x = to_signed(np.stack([render_row(r, 128).image for r in rows]))
    fresh = build_tiny_pipeline(BASE_ARCHITECTURE, seed=0)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        latents = pipe.vae.encode(x).latent_dist.mean
        assert (pipe.vae.decode(latents).sample - x).abs().mean() < 0.08  # an untrained VAE: ~0.5
        ids = pipe.tokenizer([prompt(r, TEMPLATE) for r in rows], padding="max_length",
                             max_length=pipe.tokenizer.model_max_length, return_tensors="pt").input_ids
        timesteps = torch.tensor([200, 400, 600, 800])
        noise = torch.randn(latents.shape, generator=generator)
        noisy = pipe.scheduler.add_noise(latents * pipe.vae.config.scaling_factor, noise, timesteps)

        def error(p):
            return torch.nn.functional.mse_loss(p.unet(noisy, timesteps, p.text_encoder(ids)[0]).sample, noise)

        assert error(pipe) < 0.5 * error(fresh)
