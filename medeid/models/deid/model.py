"""The MedSem-DeID network, after the paper's outline (its Fig. 5):

    x ──image encoder──► f ─┐
    x ──Enc_med (frozen)──► m ─┼─ concat (channels) ─► ID-encryptor (FiLM by the password's key)
    donor ──image encoder──► d ─┘                            │
                                    decoder (U-Net skips) ◄──┘ ─► new face t, gate g
    y = x + g * (t - x)

- The image encoder sees the face crop; Enc_med is MedicalNet's encoder, frozen, run on the
  periocular band and laid back into the crop's stride-8 grid, so every location carries "what is
  medically here" beside "what is here".
- The password keys two things: the ID-encryptor's FiLM vector, and which donor face, from a bank
  of MeMa faces (synthetic, privacy-audited), the new identity is drawn around. Another password,
  another donor and another modulation: another person. The donor is drawn among the
  `DONOR_CHOICES` whose skin tone is nearest the patient's, so the kept eye region sits in a face
  of a near colour (face-swap practice: one attribute shared, the person not).
- The gate decides per pixel between the patient (kept: the manifestation) and the new face. It
  starts by keeping the eye region and the lesion that the medical model's segmenter finds (Enc_med's
  own reading of the photo) and is learnt within a few pixels of that: the medical losses widen
  it, the identity losses trim it. Everything else is always the new face: hair, face shape, cheeks
  and mouth carry identity and no diagnosis, so no loss may trade them back.
- The new face is the donor plus a bounded, smooth correction (harmonising colour at the seams):
  it cannot paint patterns, which is how a network fools the recogniser it is trained against.

Reversal is not this network's job: the original face is sealed under the password into the
output's pixels (`medeid.models.deid.payload`) and the ID-decryptor opens it (`medeid.models.deid.api`).

Saved as a folder: `config.json` and `model.safetensors` (the network, the frozen Enc_med and the
donor bank), loaded by `from_uri`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medeid import storage
from medeid.models.folder import read_model, save_model
from medeid.models.medical import MedicalNet, MedicalNetConfig, eye_region

FACE_CORRECTION = 0.2  # at most this far from the donor, in [-1, 1] units (a tenth of the range)
CORRECTION_STRIDE = 32  # the correction is this coarse: lighting and colour, not texture
LESION_MARGIN_PX = 3  # around the segmented lesion, also kept
GATE_ZONE = 0.04  # the gate is learnt within this fraction of the crop around what is kept
# Donors of the nearest skin tones a key chooses among: half the bank. Skin tone is an identity cue,
# so a closer match costs privacy (a quarter of the bank: re-identification ~4.5 % instead of ~3 %).
DONOR_CHOICES = 128
SKIN_ROWS, SKIN_COLUMNS = (0.56, 0.7), (0.25, 0.75)  # cheeks and nose: skin in every face crop
GATE_PRIOR = 6.0  # logit of the starting gate: sigmoid(6) = 0.998 replaced outside the eyes, kept inside
# The region kept from the start is the medical model's `eye_region`: not the
# face's edges, hair or background.


@dataclass(frozen=True)
class DeidNetConfig:
    image_size: int = 128
    widths: tuple[int, ...] = (16, 32, 64)  # image-encoder stages at strides 2, 4, 8
    key_dim: int = 128
    encryptor_blocks: int = 2  # FiLM residual blocks
    use_enc_med: bool = True  # False: the ablation without medical semantics
    medical: dict = field(default_factory=lambda: asdict(MedicalNetConfig()))
    donors: int = 1


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    # GroupNorm, not BatchNorm: batches are small, and serving batches differ from training ones.
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.GroupNorm(4, cout), nn.SiLU())


class ImageEncoder(nn.Module):
    def __init__(self, widths: tuple[int, ...]):
        super().__init__()
        channels = (3, *widths)
        self.stages = nn.ModuleList(nn.Sequential(_conv(channels[i], channels[i + 1], 2),
                                                  _conv(channels[i + 1], channels[i + 1]))
                                    for i in range(len(widths)))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


class FiLMBlock(nn.Module):
    """A residual block whose normalised activations are scaled and shifted by the key."""

    def __init__(self, channels: int, key_dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.norm = nn.GroupNorm(4, channels, affine=False)
        self.film = nn.Linear(key_dim, 2 * channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, h: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.film(key)[:, :, None, None].chunk(2, dim=1)
        return h + self.conv2(F.silu(self.norm(self.conv1(h)) * (1 + gamma) + beta))


class IdEncryptor(nn.Module):
    """Fuses image, medical and donor features, then changes identity under the key."""

    def __init__(self, cin: int, channels: int, key_dim: int, blocks: int):
        super().__init__()
        self.fuse = nn.Conv2d(cin, channels, 1)
        self.blocks = nn.ModuleList(FiLMBlock(channels, key_dim) for _ in range(blocks))

    def forward(self, features: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        h = self.fuse(features)
        for block in self.blocks:
            h = block(h, key)
        return h


class MedSemDeIDNet(nn.Module):
    def __init__(self, config: DeidNetConfig, donors: torch.Tensor | None = None):
        super().__init__()
        self.config = config
        w, size = config.widths, config.image_size
        self.medical = MedicalNet(MedicalNetConfig(**{**config.medical, "widths": tuple(config.medical["widths"])}))
        self.medical.requires_grad_(False)
        med_channels = self.medical.config.feature_channels
        self.encoder = ImageEncoder(w)
        self.encryptor = IdEncryptor(w[2] + med_channels + w[2], w[2], config.key_dim, config.encryptor_blocks)
        self.up2 = _conv(w[2] + w[1], w[1])
        self.up1 = _conv(w[1] + w[0], w[0])
        self.full = _conv(w[0] + 6, 16)
        self.head = nn.Conv2d(16, 4, 3, 1, 1)
        nn.init.zeros_(self.head.weight)  # start as the prior composite: donor outside the eye rows
        nn.init.zeros_(self.head.bias)
        self.register_buffer("eye_prior", torch.from_numpy(eye_region(size))[None, None], persistent=False)
        if donors is None:
            donors = torch.zeros(config.donors, size, size, 3, dtype=torch.uint8)
        self.register_buffer("donors", donors)
        self.register_buffer("donor_skin", skin_tone(donors))

    def train(self, mode: bool = True) -> "MedSemDeIDNet":
        super().train(mode)
        self.medical.eval()  # frozen: its batch-norm statistics stay the ones it was trained with
        return self

    def donor_choices(self, x_uint8_nhwc: torch.Tensor) -> torch.Tensor:
        """(N, DONOR_CHOICES) indices of the donors nearest each photo's skin tone, nearest first."""
        distance = torch.cdist(skin_tone(x_uint8_nhwc), self.donor_skin)
        return distance.argsort(dim=1)[:, :min(DONOR_CHOICES, len(self.donors))]

    def donor_images(self, index: torch.Tensor) -> torch.Tensor:
        """Donor faces `index` as model input, (N, 3, R, R) in [-1, 1]."""
        return self.donors[index].permute(0, 3, 1, 2).float() / 127.5 - 1.0

    def medical_band(self, x: torch.Tensor) -> torch.Tensor:
        top, end = self.medical.config.band_rows(x.shape[-2])
        return x[:, :, top:end]

    def _in_crop(self, band_map: torch.Tensor, height: int) -> torch.Tensor:
        """A map over the medical band, (N, C, h, w), placed into the crop's rows at its own scale."""
        top, end = self.medical.config.band_rows(height)
        scale = band_map.shape[-2] / (end - top)
        grid = band_map.new_zeros(*band_map.shape[:2], round(height * scale), band_map.shape[-1])
        first = round(top * scale)
        rows = min(band_map.shape[-2], grid.shape[-2] - first)
        grid[:, :, first:first + rows] = band_map[:, :, :rows]
        return grid

    def medical_reading(self, x: torch.Tensor) -> dict[str, torch.Tensor] | None:
        """The frozen medical model's reading of the band (None for the ablation without Enc_med)."""
        return self.medical(self.medical_band(x)) if self.config.use_enc_med else None

    def forward(self, x: torch.Tensor, key: torch.Tensor, donor: torch.Tensor) -> dict[str, torch.Tensor]:
        """x, donor: (N, 3, R, R) in [-1, 1]; key: (N, key_dim). Returns y, the new face, the gate
        (1 = replaced), what was to be kept, and the medical reading of x (None without Enc_med)."""
        n, size = len(x), x.shape[-1]
        reading = self.medical_reading(x)
        if reading is None:
            features = x.new_zeros(n, self.medical.config.feature_channels, size // 8, size // 8)
            lesion = x.new_zeros(n, 1, size, size)
        else:  # Enc_med's features in the crop's stride-8 grid; the segmented lesion, dilated
            features = self._in_crop(reading["features"], size)
            grow = 2 * LESION_MARGIN_PX + 1
            lesion = F.max_pool2d(self._in_crop((reading["mask"] > 0).float()[:, None], size), grow, stride=1,
                                  padding=grow // 2)
        f1, f2, f3 = self.encoder(x)
        d3 = self.encoder(donor)[2]
        h = self.encryptor(torch.cat([f3, features, d3], 1), key)
        h = self.up2(torch.cat([F.interpolate(h, size=f2.shape[-2:], mode="bilinear"), f2], 1))
        h = self.up1(torch.cat([F.interpolate(h, size=f1.shape[-2:], mode="bilinear"), f1], 1))
        h = self.full(torch.cat([F.interpolate(h, size=x.shape[-2:], mode="bilinear"), x, donor], 1))
        out = self.head(h)
        coarse = F.avg_pool2d(out[:, :3], CORRECTION_STRIDE)
        correction = F.interpolate(torch.tanh(coarse), size=x.shape[-2:], mode="bilinear", align_corners=False)
        face = (donor + FACE_CORRECTION * correction).clamp(-1, 1)
        # Kept: the eye region and the lesion Enc_med's segmenter finds. Within a few pixels of it the
        # gate is learnt (the medical losses widen it, the identity losses trim it); beyond, replaced.
        keep = torch.maximum(self.eye_prior, lesion)
        grow = 2 * round(GATE_ZONE * x.shape[-1]) + 1
        zone = F.max_pool2d((keep > 0.5).float(), grow, stride=1, padding=grow // 2)
        gate = torch.sigmoid(GATE_PRIOR * (1 - 2 * keep) + zone * out[:, 3:])
        return {"y": x + gate * (face - x), "face": face, "gate": gate, "keep": keep, "reading": reading}

    def save(self, directory: str | Path, metadata: dict | None = None) -> Path:
        return save_model(self, {**asdict(self.config), "metadata": metadata or {}}, directory)

    @classmethod
    def from_uri(cls, uri: str, settings: storage.S3Settings | None = None) -> "MedSemDeIDNet":
        values, weights = read_model(uri, "MedSem-DeID model", settings)
        values.pop("metadata", None)
        model = cls(DeidNetConfig(**{**values, "widths": tuple(values["widths"])}))
        model.load_state_dict(weights)
        return model.eval()


def skin_tone(images_uint8_nhwc: torch.Tensor) -> torch.Tensor:
    """Median RGB of each face's cheeks and nose, float (N, 3)."""
    size = images_uint8_nhwc.shape[1]
    rows = slice(round(SKIN_ROWS[0] * size), round(SKIN_ROWS[1] * size))
    cols = slice(round(SKIN_COLUMNS[0] * size), round(SKIN_COLUMNS[1] * size))
    patch = images_uint8_nhwc[:, rows, cols].reshape(len(images_uint8_nhwc), -1, 3).float()
    return patch.median(dim=1).values if len(patch) else torch.zeros(0, 3)


def donor_bank(images: list[np.ndarray], size: int) -> torch.Tensor:
    """Donor faces (`medeid.models.deid.donors`) as the model's bank: uint8 (N, size, size, 3)."""
    if not images:
        raise ValueError("the donor bank is empty: MedSem-DeID needs synthetic (MeMa) faces to draw identities from")
    return torch.from_numpy(np.stack([cv2.resize(i, (size, size), interpolation=cv2.INTER_CUBIC) for i in images]))
