"""Typed configuration: dataclass defaults in code, named presets in `medeid/configs/*.yaml`.

A job loads a preset (`demo`: tiny CPU models, local stack; `paper`: full-size models on GPUs) or a
YAML file of its own, then applies command-line overrides. Credentials are never part of a config:
they come from the standard AWS variables (see `medeid.storage`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from medeid.storage import S3Settings

PRESETS_DIR = Path(__file__).parent / "configs"


@dataclass(frozen=True)
class StorageConfig:
    endpoint_url: str | None = None  # None: take AWS_ENDPOINT_URL, else AWS itself
    region: str | None = None

    def settings(self) -> S3Settings:
        return S3Settings.from_env(endpoint_url=self.endpoint_url, region=self.region)


@dataclass(frozen=True)
class ArchiveConfig:
    """The synthetic hospital archive (`jobs/make_synthetic_archive.py`)."""

    patients: int = 48
    photos_per_patient: int = 4
    size: int = 128  # pixels, 64..256
    seed: int = 0


@dataclass(frozen=True)
class RecognizerConfig:
    """One face recogniser trained with an ArcFace loss (`jobs/train_identity.py`)."""

    architecture: str = "resnet"  # resnet | mobile
    width: int = 16  # channels of the first stage
    seed: int = 0
    epochs: int = 14
    batch_size: int = 32  # per worker: 64 a step over two workers; bigger batches need more epochs here
    lr: float = 0.1  # peak of the one-cycle schedule
    weight_decay: float = 5e-4  # SGD's
    margin: float = 0.4  # additive angular margin, radians
    scale: float = 32.0
    far: float = 1e-3  # false accept rate at which TAR and the match threshold are measured
    max_shift: int = 6  # augmentation: random shift in pixels
    eval_every: int = 4  # epochs between held-out verifications (and always at the end)
    num_workers: int = 2
    held_out: float = 0.2  # fraction of patients kept out of training for verification


@dataclass(frozen=True)
class IdentityConfig:
    # The recogniser the pipeline uses (identity filter, DeID losses) and an independent one,
    # of another architecture and seed, kept for evaluation only.
    recognizer: RecognizerConfig = field(default_factory=RecognizerConfig)
    # The mobile evaluator underfits at the resnet's weight decay in a demo's few hundred steps
    # (TAR ~0.87 at FAR 1e-3 against ~0.96 at 5e-5, two seeds).
    evaluator: RecognizerConfig = field(default_factory=lambda: RecognizerConfig(architecture="mobile", seed=1,
                                                                                weight_decay=5e-5))


@dataclass(frozen=True)
class MedicalConfig:
    """The medical model: Enc_med, its heads and the lesion segmenter (`jobs/train_medical.py`)."""

    image_size: int = 128  # the periocular signs need the archive's full resolution
    widths: tuple[int, ...] = (16, 32, 64, 96)
    seed: int = 0
    epochs: int = 16
    batch_size: int = 32  # per worker
    lr: float = 3e-3  # peak of the one-cycle schedule (AdamW)
    mask_weight: float = 1.0  # segmentation loss against the classification losses
    context_mix: float = 0.5  # share of photos whose context (beyond the eye region) is another photo's
    eval_every: int = 8
    num_workers: int = 2
    held_out: float = 0.2


@dataclass(frozen=True)
class GeneratorConfig:
    """The MeMa generator: Stable Diffusion fine-tuned on the real patients (`jobs/train_generator.py`)."""

    # A diffusers folder or S3 prefix (save_pretrained layout). None: build the tiny demo pipeline and
    # first pretrain its VAE on the archive, standing in for the pretrained weights a real run starts from.
    base: str | None = None
    resolution: int = 64
    finetune: str = "lora"  # lora (UNet adapters, peft) | full (UNet and text encoder)
    lora_rank: int = 8
    prompt_template: str = "a clinical photo of a {sex} patient aged {age_band} with {condition}"
    condition_dropout: float = 0.1  # empty prompts, for classifier-free guidance
    epochs: int = 10
    batch_size: int = 32  # per worker
    lr: float = 1e-4
    ema: bool = False
    ema_decay: float = 0.999
    mixed_precision: str = "no"  # no | fp16 | bf16 (CUDA only)
    vae_pretrain_epochs: int = 2  # tiny base only
    num_workers: int = 2
    # Torch threads in each worker; 0 keeps Ray's (one per requested CPU). One worker with every core
    # beats two single-threaded DDP workers on a 2-core machine (no gradient all-reduce).
    threads_per_worker: int = 0
    use_gpu: bool = False
    seed: int = 0
    # The archive's held-out patients (the medical model's split, `train.data.split_of`): the generator
    # never sees them, so MeMa's train-on-synthetic test on them (`mema.tstr`) is a test on strangers.
    held_out: float = 0.2


@dataclass(frozen=True)
class MemaConfig:
    """The MeMa build (`jobs/build_mema.py`): sampling, generation and the filters."""

    samples: int = 120  # condition rows
    seed: int = 0
    disease_mix: dict[str, float] | None = None  # None: the real cohort's P(disease)
    strategy: str = "txt2img"  # txt2img | img2img | inpaint
    steps: int = 25
    guidance: float = 3.0
    strength: float = 0.75  # img2img and inpaint: how much of the source is re-drawn
    max_attempts: int = 4  # generations per condition row before it is left unfilled (over all rounds)
    batch_size: int = 16  # rows per generator call
    generator_actors: int = 1
    filter_actors: int = 1
    gpus_per_generator: float = 0.0
    # Custom resources each generator actor needs, to pin generation to some nodes (a node label
    # resource such as {"gpu_node": 1}; the multi-node tests use one to stand for a GPU).
    generator_resources: dict[str, float] | None = None
    threads_per_generator: int = 0  # torch threads in each CPU generator actor; 0 keeps Ray's one per CPU
    # The full-face filter rejects a face above the recogniser's match threshold and the cosine that this
    # share of the real photos reach with their nearest photo of another patient (open-set), less the margin.
    identity_far: float = 1e-2
    identity_margin: float = 0.05
    min_sharpness: float = 5.0  # variance of the Laplacian, on the 0..255 grey image
    min_contrast: float = 12.0  # standard deviation of the grey image
    min_confidence: float = 0.0  # plausibility: the classifier must also be this sure
    # The eye-band attackers' audit of the released images (periocular recogniser, pixel copies). Off only
    # where it runs elsewhere (the multi-node placement test): the card then FAILs its bars as "not run".
    audit_attacks: bool = True
    # The identity filter's eye-band check (`mema/eye_filter.py`): a periocular recogniser of its own, trained
    # on every real patient at the build's start (threshold at this FAR, stricter than the audit's 1e-3),
    # and the pixel-copy check. Off, only the full-face recogniser filters.
    eye_filter: bool = True
    eye_filter_far: float = 1e-2
    # Train on synthetic, test on real (`mema/tstr.py`): the medical model trained on the released images
    # alone, tested on the archive's held-out patients beside the real-trained one (`<medical>/metrics.json`).
    # Off, the card FAILs its two TSTR bars as not run.
    tstr: bool = True


@dataclass(frozen=True)
class DeidConfig:
    """MedSem-DeID: the network, its losses' weights and its training (`jobs/train_deid.py`).

    Training needs donors the renderer can draw again (`donors: synthetic`) and an archive from the
    synthetic world: each target is a training photo's condition and pose drawn on a donor.
    Recovery needs no loss: the original face is sealed under the password into the output and
    restored exactly by the ID-decryptor (`medeid.models.deid.payload`), whatever the network does.
    """

    image_size: int = 128  # the face crop the network works on (64..256 demo, 256..512 GPU presets)
    widths: tuple[int, ...] = (16, 32, 64)  # image-encoder stages at strides 2, 4, 8
    key_dim: int = 128
    encryptor_blocks: int = 2
    use_enc_med: bool = True  # False trains the ablation without medical semantics
    donor_count: int = 256  # at most this many donor faces in the model
    pairs_per_photo: int = 2  # training targets drawn per photo, each on another donor (medeid.train.deid)
    # A key picks the donor among this many of the nearest skin tones: a trade (README, 2026-12-03). Skin
    # tone identifies: with the whole bank (256) every attacker's bar passed (periocular 4.4 %, adaptive
    # 3.2 %) but the signs read worse on a far skin tone (disease ratio 0.949, laterality 0.931, Dice
    # 0.848: three utility bars FAIL); the half nearest the patient's skin keeps them (0.982, 0.962,
    # 0.914) and the periocular attacker found 4.7-6.7 % (its bar 5.9-7.7 %, by the ideal swap's figure).
    donor_choices: int = 128
    # The network sees the photo on the donor's skin tone (DeidNetConfig.skin_shift). Off: measured on
    # the demo: with the whole bank every attacker passed but utility fell (disease 0.924, Dice 0.740; README).
    skin_shift: bool = False
    # Loss weights.
    paired_weight: float = 1.0  # L1 to the target: the donor drawn with the photo's condition, pose and lids
    eye_weight: float = 4.0  # the eye region counts this much more in the paired losses: the signs live there
    edge_weight: float = 1.0  # L1 of image gradients to the target's: sharp lids, lesion borders, no seams
    warp_weight: float = 0.5  # the posed donor alone near the target
    pose_weight: float = 1.0  # the pose head's reading of the photo's rotation, scale and shift
    # Enc_med's reading of the output = the target's features, the input's findings. Off by default: at
    # 0.05 and 0.01 it painted blobs the frozen medical model reads (beside the face, over the eyes)
    # rather than signs (README, MedSem-DeID against every attacker); the target carries the signs.
    medical_weight: float = 0.0
    epochs: int = 6
    batch_size: int = 16  # per worker
    lr: float = 2e-3
    eval_every: int = 2  # epochs between held-out checks and sample grids
    eval_photos: int = 64
    num_workers: int = 2
    use_gpu: bool = False
    held_out: float = 0.2  # the archive's held-out patients, never trained on
    seed: int = 0


@dataclass(frozen=True)
class DetectorConfig:
    """The tiny face detector (`jobs/train_detector.py`)."""

    width: int = 16  # channels of the first stage
    input_size: int = 128  # = medeid.models.detector.INPUT_SIZE
    seed: int = 0
    train_samples: int = 3000  # drawn once, then reused every epoch
    test_samples: int = 300  # held out: other seeds, other people
    negative_share: float = 0.3  # of the samples, images with no face
    zoom_out_share: float = 0.3  # of the faces, rendered smaller onto a cluttered background
    grey_share: float = 0.15  # of the images, greyscale: archives hold grey photos and DICOMs
    epochs: int = 20  # ~940 steps of 64; 10 epochs gave held-out recall 0.99, 2.5% false detections
    batch_size: int = 32  # per worker
    lr: float = 0.01  # peak of the one-cycle schedule (AdamW)
    det_thresh: float = 0.5  # the pack's detection threshold
    eval_every: int = 4  # epochs between held-out evaluations (and always at the end)
    num_workers: int = 2


# The head around each replaced face (hair, ears, outline) blurred over the face crop's square grown
# this many times; 0 leaves it as it was. Real photos need it: the crop ends near the hairline, and a
# real head's hair and outline identify. The archive job's library default too, so a run resumed from
# Python finishes what a `jobs/anonymize_archive.py` run started, byte for byte.
HEAD_SURROUND = 1.6


@dataclass(frozen=True)
class AnonymizeConfig:
    """The archive job (`jobs/anonymize_archive.py`) and the demo's archive of files."""

    actors: int = 2
    batch_size: int = 32  # files per actor call and per manifest part (8: 37 files/s on 2 cores, 32: 40)
    report_samples: int = 8  # before/after pairs in the run's report
    pass_faceless: bool = False  # True passes photos without a face (metadata stripped) instead of quarantining
    # Where each file's recovery data goes (medeid.archive.recovery): separate (a private store beside
    # the manifest; the shared copy carries none), embedded (inside the file), none (irreversible).
    recovery: str = "separate"
    surround: float = HEAD_SURROUND
    demo_photos: int = 240  # patient photos in the demo's archive of files (`jobs/make_hospital_files.py`)
    gpus_per_actor: float = 0.0  # > 0 runs MedSem-DeID on CUDA in each anonymizing actor
    actor_resources: dict[str, float] | None = None  # custom resources each actor needs (see MemaConfig)


@dataclass(frozen=True)
class ServeConfig:
    """The serving endpoint (`medeid.serve`): models, dynamic batching, request limits, secrets' places.

    The secrets themselves are never in a config: the server secret (record ids) and the recovery
    token are read on each replica from the files named here, else from $MEDEID_SERVE_SECRET and
    $MEDEID_SERVE_TOKEN. Without a secret, callers must bring passwords; without a token, recovery is off.
    """

    model_uri: str | None = None  # MedSem-DeID: a save folder or S3 prefix
    detector_uri: str | None = None  # the face detector pack
    max_batch_size: int = 16  # requests per forward pass; 1 turns batching off
    batch_wait_timeout_s: float = 0.01  # how long a batch waits to fill
    max_ongoing_requests: int = 32  # per replica; at least max_batch_size, or batches never fill
    max_body_bytes: int = 25 * 2**20  # a 61 MP camera JPEG is ~25 MiB
    max_pixels: int = 64_000_000  # decoded image size limit (and decompression bombs)
    surround: float = HEAD_SURROUND  # as the archive job's `anonymize.surround`
    pass_faceless: bool = False  # True returns faceless images stripped of metadata instead of a 422
    threads: int = 0  # torch threads per replica; 0 keeps Ray's (one per CPU)
    num_cpus: float = 1.0  # per replica
    num_gpus: float = 0.0  # per replica; > 0 runs the model on CUDA
    secret_file: str | None = None
    token_file: str | None = None


@dataclass(frozen=True)
class Config:
    preset: str = "demo"
    storage: StorageConfig = field(default_factory=StorageConfig)
    archive: ArchiveConfig = field(default_factory=ArchiveConfig)
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    medical: MedicalConfig = field(default_factory=MedicalConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    mema: MemaConfig = field(default_factory=MemaConfig)
    deid: DeidConfig = field(default_factory=DeidConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    anonymize: AnonymizeConfig = field(default_factory=AnonymizeConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _merge(current, values: dict[str, Any], where: str):
    """`current` (a config dataclass) with `values` applied; nested sections merge the same way,
    so a partial section keeps the defaults it leaves out."""
    hints = get_type_hints(type(current))
    known = {f.name for f in dataclasses.fields(current)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown keys in {where}: {sorted(unknown)}; known: {sorted(known)}")
    changes = {}
    for name, value in values.items():
        if dataclasses.is_dataclass(hints[name]):
            changes[name] = _merge(getattr(current, name), value or {}, f"{where}.{name}")
        else:
            changes[name] = value
    return dataclasses.replace(current, **changes)


def load_config(preset_or_path: str = "demo", overrides: dict[str, Any] | None = None) -> Config:
    """A preset name or a YAML path, then dotted overrides such as {"archive.patients": 10}."""
    path = Path(preset_or_path)
    if not path.suffix:
        path = PRESETS_DIR / f"{preset_or_path}.yaml"
    if not path.is_file():
        presets = sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))
        raise FileNotFoundError(f"no config {preset_or_path!r}: give a YAML path or one of the presets {presets}")
    values = yaml.safe_load(path.read_text()) or {}
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        *parents, leaf = dotted.split(".")
        node = values
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return _merge(Config(), values, str(path))
