"""Generator fine-tuning on Ray Train: LoRA checkpoints in diffusers formats, resume, a loadable pipeline."""

import json

import numpy as np
import pytest
import torch

from medeid import storage
from medeid.config import GeneratorConfig
from medeid.models.generator import TinyGeneratorConfig, build_tiny_pipeline, load_pipeline
from medeid.pipelines.synthetic_archive import build_archive
from medeid.train.data import patient_ids_by_split
from medeid.train.generator import add_lora, assemble_pipeline, save_weights, train_generator

TINY = GeneratorConfig(resolution=32, finetune="lora", lora_rank=4, epochs=2, batch_size=8, lr=1e-3,
                       vae_pretrain_epochs=1, num_workers=2)


def draw(pipe, seed=0):
    return pipe("a clinical photo of a female patient aged 60-69 with ptosis", num_inference_steps=2, height=32,
                width=32, output_type="np", generator=torch.Generator().manual_seed(seed)).images


@pytest.mark.parametrize("finetune", ["lora", "full"])
def test_weights_round_trip_in_diffusers_formats(tmp_path, finetune):
    cfg = GeneratorConfig(resolution=32, finetune=finetune, lora_rank=4)
    pipe = build_tiny_pipeline(TinyGeneratorConfig(resolution=32), seed=0)
    if finetune == "lora":
        add_lora(pipe.unet, cfg.lora_rank)
    with torch.no_grad():  # what training would have changed
        for name, p in pipe.unet.named_parameters():
            if p.requires_grad and ("lora" in name or finetune == "full"):
                p.add_(torch.randn_like(p) * 0.05)
    save_weights(pipe, tmp_path, cfg, vae_trained=False)
    expected = {"lora": ["lora/pytorch_lora_weights.safetensors"],
                "full": ["unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"]}[finetune]
    assert all((tmp_path / f).exists() for f in expected)
    rebuilt = assemble_pipeline(GeneratorConfig(**{**cfg.__dict__, "base": None}), tmp_path)
    base = build_tiny_pipeline(TinyGeneratorConfig(resolution=32), seed=0)
    np.testing.assert_allclose(draw(rebuilt), draw(pipe), atol=2e-3)
    assert np.abs(draw(rebuilt) - draw(base)).max() > 1e-3  # the fine-tuned weights did arrive


def test_lora_fine_tune_checkpoints_resumes_and_writes_a_pipeline(ray_session, s3, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDEID_CACHE", str(tmp_path / "cache"))
    storage.make_bucket("s3://generator-train", s3.settings)
    archive = build_archive("s3://generator-train/archive", 12, 2, size=64, seed=2).root
    out, runs = "s3://generator-train/models/generator", "s3://generator-train/runs"
    first = train_generator(archive, out, runs, GeneratorConfig(**{**TINY.__dict__, "epochs": 1}), name="gen")
    assert first["epochs"] == 1 and first["steps"] > 0 and np.isfinite(first["final_loss"])
    # Only the training patients: the held-out ones are MeMa's test on real (mema.tstr).
    by_split = patient_ids_by_split(archive, TINY.held_out)
    assert by_split["test"] and first["photos"] == len(by_split["train"])
    assert first["patients"] == len(set(by_split["train"]))
    # The same run asked for more epochs carries on from its checkpoint instead of starting over.
    second = train_generator(archive, out, runs, TINY, name="gen")
    assert second["start_epoch"] == 1 and second["epochs"] == 2 and second["steps"] == 2 * first["steps"]
    checkpoints = [f for f in storage.list_files(f"{runs}/gen") if f.endswith("pytorch_lora_weights.safetensors")]
    assert checkpoints and any(f.endswith("vae/diffusion_pytorch_model.safetensors")
                               for f in storage.list_files(f"{runs}/gen"))
    assert storage.exists(f"{out}/lora/pytorch_lora_weights.safetensors")
    info = json.loads(storage.read_bytes(f"{out}/generator.json"))
    assert info["version"] == second["version"] != first["version"] and info["finetune"] == "lora"
    pipe = load_pipeline(out)
    assert draw(pipe).shape == (1, 32, 32, 3)
    assert pipe.vae.config.scaling_factor != build_tiny_pipeline(TinyGeneratorConfig(resolution=32)).vae.config \
        .scaling_factor  # the pretrained VAE and its measured latent scale came along
