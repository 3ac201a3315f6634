"""The MeMa generator: a Stable Diffusion pipeline from diffusers, loaded from a folder or S3.

Production loads real weights (e.g. SD 1.5 saved with `save_pretrained`) with
`local_files_only=True`: nothing is fetched. The `demo` preset builds a tiny pipeline from the
same diffusers classes (UNet2DConditionModel, AutoencoderKL, CLIPTextModel, DDIMScheduler) with a
CLIP BPE tokenizer built offline over the prompt vocabulary, and fine-tunes it like the real one.
"""

from __future__ import annotations

import hashlib
import json
import string
from dataclasses import dataclass
from pathlib import Path

import torch

from medeid import storage
from medeid.synth.conditions import DISEASES, TUMOUR_SITES

SPECIAL = ("<|startoftext|>", "<|endoftext|>")
# Words the prompt template uses; any other text still tokenizes, letter by letter.
PROMPT_WORDS = (
    "a clinical photo of the face frontal periocular close-up female male patient aged years with and on "
    "right left bilateral eye eyes mild moderate severe healthy no signs upper lid droop lid retraction "
    "proptosis swelling esotropia exotropia conjunctival injection redness nodular lesion central ulceration "
    "thyroid disease ptosis strabismus periocular tumour medial lateral canthus lower"
).split() + [w for name in DISEASES + TUMOUR_SITES for w in name.split("_")]


TOKENIZER_DIR = Path(__file__).parent / "tokenizer"
# The committed base generator (`jobs/pretrain_generator.py`), named in configs as `medeid:generator_base`.
PACKAGED_PREFIX = "medeid:"
PACKAGED_MODELS = Path(__file__).parent


def resolve_uri(uri: str) -> str:
    """`medeid:<name>` -> the folder shipped in the package; any other URI unchanged."""
    if not uri.startswith(PACKAGED_PREFIX):
        return uri
    folder = PACKAGED_MODELS / uri.removeprefix(PACKAGED_PREFIX)
    if not (folder / "model_index.json").exists():
        raise FileNotFoundError(f"{uri} names no pipeline shipped with medeid (looked in {folder})")
    return str(folder)


def build_tokenizer(max_length: int = 77):
    """The demo's CLIP tokenizer, from the vocabulary and merges shipped in `medeid/models/tokenizer`.

    They are a file, not rebuilt on each call, because the BPE trainer breaks ties in no fixed order:
    two builds (two training workers) would give one prompt different token ids.
    """
    from transformers import CLIPTokenizer

    vocab = json.loads((TOKENIZER_DIR / "vocab.json").read_text())
    lines = (TOKENIZER_DIR / "merges.txt").read_text().splitlines()
    merges = [tuple(line.split(" ")) for line in lines if line and not line.startswith("#")]
    # transformers 5 ignores vocab_file/merges_file here: vocabulary and merges go in as objects.
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)


def train_tokenizer(words=PROMPT_WORDS, directory: Path = TOKENIZER_DIR) -> None:
    """Learn the BPE merges (`tokenizers`' trainer) that make each of `words` one token, and write the
    vocabulary and merges that `build_tokenizer` reads; every other letter, digit and punctuation
    mark is in the vocabulary on its own. Run again when the prompt vocabulary changes."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    alphabet = list(string.ascii_lowercase + string.digits + string.punctuation)
    bpe = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    bpe.train_from_iterator(sorted({w.lower() for w in words if w.isalpha()}), trainers.BpeTrainer(
        vocab_size=100_000, min_frequency=1, special_tokens=list(SPECIAL), initial_alphabet=alphabet,
        end_of_word_suffix="</w>", show_progress=False))
    model = json.loads(bpe.to_str())["model"]
    vocab = dict(model["vocab"])
    for char in alphabet:  # a character may also end a word ("45" ends in "5</w>")
        for token in (char, char + "</w>"):
            vocab.setdefault(token, len(vocab))
    merges = [m if isinstance(m, list) else m.split(" ") for m in model["merges"]]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps(vocab, indent=0, sort_keys=True))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")


@dataclass(frozen=True)
class TinyGeneratorConfig:
    resolution: int = 64
    unet_channels: tuple[int, ...] = (32, 64)
    vae_channels: tuple[int, ...] = (16, 32, 32)  # three blocks: latents at 1/4 of the image
    text_width: int = 32
    text_layers: int = 2
    # One per UNet level, top first (the up blocks mirror them); cross-attention where the text steers.
    down_blocks: tuple[str, ...] = ("CrossAttnDownBlock2D", "DownBlock2D")


UP_BLOCK = {"CrossAttnDownBlock2D": "CrossAttnUpBlock2D", "DownBlock2D": "UpBlock2D"}


def build_tiny_pipeline(config: TinyGeneratorConfig = TinyGeneratorConfig(), seed: int = 0):
    """A randomly initialised Stable Diffusion pipeline small enough to train on two CPU cores."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    latent_size = config.resolution // 2 ** (len(config.vae_channels) - 1)
    unet = UNet2DConditionModel(
        sample_size=latent_size, in_channels=4, out_channels=4, block_out_channels=config.unet_channels,
        layers_per_block=1, down_block_types=config.down_blocks,
        up_block_types=tuple(UP_BLOCK[b] for b in reversed(config.down_blocks)), cross_attention_dim=config.text_width,
        attention_head_dim=8, norm_num_groups=8)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, block_out_channels=config.vae_channels, latent_channels=4,
        norm_num_groups=8, sample_size=config.resolution,
        down_block_types=("DownEncoderBlock2D",) * len(config.vae_channels),
        up_block_types=("UpDecoderBlock2D",) * len(config.vae_channels))
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=config.text_width, intermediate_size=2 * config.text_width,
        num_attention_heads=4, num_hidden_layers=config.text_layers, max_position_embeddings=77,
        bos_token_id=0, eos_token_id=1, pad_token_id=1))
    # SD 1.x's noise schedule; steps_offset=1 as SD's own scheduler config has it.
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def load_pipeline(uri: str, settings: storage.S3Settings | None = None, dtype: torch.dtype = torch.float32):
    """A pipeline saved with `save_pretrained`, from a folder, an S3 prefix or `medeid:<name>` (shipped in
    the package); never downloads."""
    from diffusers import StableDiffusionPipeline

    directory = storage.local_copy(resolve_uri(uri), settings)
    if not (directory / "model_index.json").exists():
        raise FileNotFoundError(f"model_index.json is missing from the generator at {uri}: expected a folder "
                                f"written by StableDiffusionPipeline.save_pretrained")
    return StableDiffusionPipeline.from_pretrained(str(directory), local_files_only=True, dtype=dtype,
                                                   safety_checker=None, requires_safety_checker=False)


def weights_version(directory: str | Path) -> str:
    """sha256 prefix over every weight file of a saved pipeline: names MeMa's generator."""
    digest = hashlib.sha256()
    for path in sorted(Path(directory).rglob("*.safetensors")):
        digest.update(path.relative_to(directory).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
