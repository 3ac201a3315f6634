"""The tiny generator: real diffusers classes, an offline CLIP tokenizer, a save/load round trip."""

import json

import numpy as np
import pytest
import torch

from medeid import storage
from medeid.models.generator import PROMPT_WORDS, build_tiny_pipeline, build_tokenizer, load_pipeline, train_tokenizer


def test_tokenizer_keeps_prompt_words_whole_and_spells_the_rest():
    tokenizer = build_tokenizer()
    ids = tokenizer("Clinical photo of a female patient with ptosis").input_ids
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert len(ids) == 2 + 8  # one token a word, case folded
    assert all(len(tokenizer(w).input_ids) == 3 for w in PROMPT_WORDS if w.isalpha())
    unknown = tokenizer("zebra").input_ids
    assert len(unknown) == 2 + 5 and tokenizer.unk_token_id not in unknown[1:-1]  # letter by letter
    assert len(tokenizer("aged 45").input_ids) == 2 + 3  # digits one by one, as CLIP splits them
    # Every worker builds its own: they must agree on every id.
    assert build_tokenizer().get_vocab() == tokenizer.get_vocab()


def test_retrained_tokenizer_keeps_new_words_whole(tmp_path):
    train_tokenizer(["clinical", "photo", "chalazion"], tmp_path)
    vocab = json.loads((tmp_path / "vocab.json").read_text())
    assert "chalazion</w>" in vocab and "clinical</w>" in vocab and "ptosis</w>" not in vocab


def test_pipeline_generates_and_round_trips_through_s3(tmp_path, bucket, monkeypatch):
    monkeypatch.setenv("MEDEID_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # any attempt to reach a hub would fail the test
    pipe = build_tiny_pipeline(seed=1)

    def draw(p):
        return p("a clinical photo of a male patient with strabismus", num_inference_steps=2, height=64,
                 width=64, output_type="np", generator=torch.Generator().manual_seed(0)).images

    image = draw(pipe)
    assert image.shape == (1, 64, 64, 3) and np.isfinite(image).all()
    pipe.save_pretrained(tmp_path / "generator")
    storage.copy_tree(str(tmp_path / "generator"), f"{bucket}/generator")
    loaded = load_pipeline(f"{bucket}/generator")
    assert np.array_equal(draw(loaded), image)
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        load_pipeline(str(tmp_path))
