"""The MedSem-DeID network, after the paper's outline (its Fig. 5):

    x, donor ──image encoder──► f ─┐
    x ──Enc_med (frozen)──────► m ─┴─ concat (channels) ─► ID-encryptor (FiLM by the password's key)
                                                              │
          donor, put in x's pose (pose head) ◄────────────────┤
                                decoder (U-Net skips) ◄───────┘ ─► new face t, lesion gate g
    y = t + g * (x - t)

- The new identity is the donor's, whole: the donor's frontal face, from a bank of people who are
  no patient, drawn with the findings Enc_med reads on the photo (`MedSemDeID.donor_faces`: disease,
  side and grade; without it the network lost every sign but "healthy", demo disease-accuracy ratio
  0.38), then repainted by the decoder to the photo's lid aperture, gaze and the rest of its look.
  A pose head reads the photo's in-plane rotation, scale and shift and the donor is put in that pose
  exactly (`pose_grid`), so the new face sits where the old one sat and the lesion stays where it
  was; a fine flow lets the decoder move what a condition moves (lids, irises) rather than paint it
  anew. Nothing of the patient's eye region is
  kept: iris, brows, eye shape and spacing, periocular skin are the donor's (a band of kept pixels
  identifies the patient to an attacker who looks at the eyes: issue 18).
- Enc_med is MedicalNet's encoder, frozen, run on the periocular band and laid back into the crop's
  stride-8 grid, so every location carries "what is medically here" beside "what is here".
- The gate keeps the patient's own pixels only on the lesion Enc_med's segmenter finds (a pixel
  around it, no more: a rim of the patient's skin shows on another skin tone): a lesion's look is
  the manifestation itself. The ablation without Enc_med has no segmenter, so it keeps nothing.
- The password keys the ID-encryptor's FiLM vector and which donor the new face is drawn from:
  among the model's `donor_choices` whose skin tone is nearest the patient's (half the bank by
  default: skin tone identifies, but the signs read worse on a far skin tone; README). Another
  password, another donor: another person.
- Trained on pairs (`medeid.train.deid`): the target is the donor drawn by the synthetic world's
  renderer with the photo's condition, pose, gaze and lid opening (`medeid.synth.swap.donor_swap`).

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
from medeid.models.deid.donors import READING_HEADS, candidate_count
from medeid.models.folder import read_model, save_model
from medeid.models.medical import MedicalNet, MedicalNetConfig
from medeid.pixels import to_signed
from medeid.synth.conditions import DISEASES, PERIOCULAR_TUMOUR

MAX_FINE_FLOW = 0.05  # the fine flow (stride 2: lids and irises) moves donor pixels this far, in crop units
# The photo's pose as the pose head reads it: in-plane rotation (radians), log scale, shift (crop units,
# [-1, 1] across). Each is regressed in units of its spread in a clinic's photos (synth.nuisance).
POSE_SPREAD = (0.05, 0.04, 0.03, 0.03)
LESION_MARGIN_PX = 1  # around the segmented lesion, the patient's pixels may be kept (3 kept a patch of skin)
GATE_BIAS = 0.0  # the lesion gate starts half open: the paired loss opens or shuts it
# Models saved without `donor_choices` choose among the 128 donors of the nearest skin tones (half the
# bank). Skin tone is an identity cue, so a closer match costs privacy (a quarter of the bank: full-face
# re-identification ~4.5 % instead of ~3 %; half: the periocular attacker 5.2 %, the whole bank 2.6 %).
DONOR_CHOICES = 128
SKIN_ROWS, SKIN_COLUMNS = (0.56, 0.7), (0.25, 0.75)  # cheeks and nose: skin in every face crop


@dataclass(frozen=True)
class DeidNetConfig:
    image_size: int = 128
    widths: tuple[int, ...] = (16, 32, 64)  # image-encoder stages at strides 2, 4, 8
    key_dim: int = 128
    encryptor_blocks: int = 2  # FiLM residual blocks
    use_enc_med: bool = True  # False: the ablation without medical semantics
    medical: dict = field(default_factory=lambda: asdict(MedicalNetConfig()))
    donors: int = 1
    # The donors are `synthetic_donor(i, donor_seed)`: drawn again with the condition Enc_med reads on
    # each photo (`MedSemDeID`). None: the bank's healthy faces, as they are.
    donor_seed: int | None = None
    # The seed the bank was drawn with (`synthetic_donor(i, bank_seed)`), so inference knows where each
    # donor's head is (`medeid.models.deid.scene`). None: a bank of unknown faces, left as drawn.
    bank_seed: int | None = None
    # Where a face's five landmarks sit in the crops the model learnt on, as fractions of the side
    # (10 numbers, x y per landmark; `medeid.synth.render.crop_template`): a face found by a detector
    # is cropped to that framing. None: ArcFace's template (tighter than this world's photos).
    crop_template: tuple[float, ...] | None = None
    # How many donors of the nearest skin tones a key chooses among (None: `DONOR_CHOICES`, as models
    # saved before this field did); the bank's size: any donor, whatever the patient's skin.
    donor_choices: int | None = None
    # The network sees the photo moved to the donor's skin tone (`to_donor_skin`): it cannot carry the
    # patient's skin tone into the new face. Enc_med reads the true photo and the lesion gate keeps true
    # pixels. Measured (README): it cost utility, and the band it was meant to remove was the donor's own
    # beard as the synthetic world drew it (not the network's). False: the photo as it is (and every
    # model saved before this field).
    skin_shift: bool = False
    # The model keeps the medical model's reading of every donor drawn with every candidate condition
    # (`medeid.models.deid.donors.read_drawn`; buffers `drawn_<head>`), so inference draws only the face
    # it picks (`matching_condition`). False: drawn and read when first needed (models saved before).
    drawn_readings: bool = False


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    # GroupNorm, not BatchNorm: batches are small, and serving batches differ from training ones.
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.GroupNorm(4, cout), nn.SiLU())


class ImageEncoder(nn.Module):
    def __init__(self, widths: tuple[int, ...], in_channels: int = 3):
        super().__init__()
        channels = (in_channels, *widths)
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
    """Fuses image and medical features, then changes identity under the key."""

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
    def __init__(self, config: DeidNetConfig, donors: torch.Tensor | None = None,
                 drawn: dict[str, torch.Tensor] | None = None):
        super().__init__()
        self.config = config
        w, size = config.widths, config.image_size
        self.medical = MedicalNet(MedicalNetConfig(**{**config.medical, "widths": tuple(config.medical["widths"])}))
        self.medical.requires_grad_(False)
        med_channels = self.medical.config.feature_channels
        self.encoder = ImageEncoder(w, in_channels=6)  # the photo and the donor, side by side
        self.encryptor = IdEncryptor(w[2] + med_channels, w[2], config.key_dim, config.encryptor_blocks)
        self.pose = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(16 * w[2], 64), nn.SiLU(),
                                  nn.Linear(64, 4))
        self.fine_flow = nn.Conv2d(w[0], 2, 3, 1, 1)
        self.up2 = _conv(w[2] + w[1], w[1])
        self.up1 = _conv(w[1] + w[0], w[0])
        self.full = nn.Sequential(_conv(w[0] + 9, 16), _conv(16, 16))
        self.head = nn.Conv2d(16, 4, 3, 1, 1)
        for layer in (self.pose[-1], self.fine_flow, self.head):  # start as the donor, unmoved
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        if donors is None:
            donors = torch.zeros(config.donors, size, size, 3, dtype=torch.uint8)
        self.register_buffer("donors", donors)
        self.register_buffer("donor_skin", skin_tone(donors))
        if config.drawn_readings:
            classes = {"disease": self.medical.config.num_diseases, "laterality": self.medical.config.num_lateralities,
                       "severity": self.medical.config.num_severities}
            for head, count in classes.items():
                self.register_buffer(f"drawn_{head}", torch.zeros(config.donors, candidate_count(), count)
                                     if drawn is None else drawn[head])

    def drawn_of(self, donor: int) -> dict[str, np.ndarray] | None:
        """Donor `donor`'s `read_drawn`, when the model keeps its bank's (`DeidNetConfig.drawn_readings`)."""
        if not self.config.drawn_readings:
            return None
        return {head: getattr(self, f"drawn_{head}")[donor].cpu().numpy() for head in READING_HEADS}

    def train(self, mode: bool = True) -> "MedSemDeIDNet":
        super().train(mode)
        self.medical.eval()  # frozen: its batch-norm statistics stay the ones it was trained with
        return self

    def donor_choices(self, x_uint8_nhwc: torch.Tensor) -> torch.Tensor:
        """(N, choices) indices of the donors nearest each photo's skin tone, nearest first."""
        return nearest_donors(x_uint8_nhwc, self.donor_skin, self.config.donor_choices or DONOR_CHOICES)

    def donor_images(self, index: torch.Tensor) -> torch.Tensor:
        """Donor faces `index` as model input, (N, 3, R, R) in [-1, 1]."""
        return to_signed(self.donors[index])

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

    def lesion_zone(self, reading: dict[str, torch.Tensor] | None, size: int) -> torch.Tensor | None:
        """Where the patient's pixels may stay: the segmented lesion, dilated, on photos Enc_med reads as
        a periocular tumour (a segmenter's stray pixels on a red or swollen eye would keep pieces of
        the patient's eyes). None without Enc_med."""
        if reading is None:
            return None
        grow = 2 * LESION_MARGIN_PX + 1
        tumour = (reading["disease"].argmax(1) == DISEASES.index(PERIOCULAR_TUMOUR)).float()[:, None, None, None]
        return tumour * F.max_pool2d(self._in_crop((reading["mask"] > 0).float()[:, None], size), grow, stride=1,
                                     padding=grow // 2)

    def warp(self, donor: torch.Tensor, pose: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        """The frontal donor put in the photo's pose (`pose_grid`), then moved by a flow (N, 2, r, r) in
        crop units, upsampled to the donor's size."""
        size = donor.shape[-1]
        flow = F.interpolate(flow, size=(size, size), mode="bilinear", align_corners=False)
        return F.grid_sample(donor, pose_grid(pose, size) + flow.permute(0, 2, 3, 1), padding_mode="border",
                             align_corners=False)

    def forward(self, x: torch.Tensor, key: torch.Tensor, donor: torch.Tensor,
                pose: torch.Tensor | None = None, reading: dict[str, torch.Tensor] | None = None
                ) -> dict[str, torch.Tensor]:
        """x, donor: (N, 3, R, R) in [-1, 1]; key: (N, key_dim); pose: x's true pose when known (training
        puts the donor in it, so the decoder learns on well-placed donors from the first step), else
        the pose head's reading; reading: `medical_reading(x)` when the caller already made it.
        Returns y, the new face, the warped donor, the pose read from x (`POSE_SPREAD`'s order), the
        gate (1 = the patient's pixel kept), the lesion zone and the medical reading of x (both None
        without Enc_med)."""
        n, size = len(x), x.shape[-1]
        reading = self.medical_reading(x) if reading is None else reading
        seen = to_donor_skin(x, donor) if self.config.skin_shift else x
        if reading is None:
            features = x.new_zeros(n, self.medical.config.feature_channels, size // 8, size // 8)
        else:  # Enc_med's features in the crop's stride-8 grid
            features = self._in_crop(reading["features"], size)
        f1, f2, f3 = self.encoder(torch.cat([seen, donor], 1))
        read = self.pose(f3) * f3.new_tensor(POSE_SPREAD)
        h = self.encryptor(torch.cat([f3, features], 1), key)
        h = self.up2(torch.cat([F.interpolate(h, size=f2.shape[-2:], mode="bilinear"), f2], 1))
        h = self.up1(torch.cat([F.interpolate(h, size=f1.shape[-2:], mode="bilinear"), f1], 1))
        fine = MAX_FINE_FLOW * torch.tanh(self.fine_flow(h))  # at stride 2: where lids and irises sit
        warped = self.warp(donor, read if pose is None else pose, fine)
        h = self.full(torch.cat([F.interpolate(h, size=x.shape[-2:], mode="bilinear"), seen, donor, warped], 1))
        out = self.head(h)
        face = (warped + torch.tanh(out[:, :3])).clamp(-1, 1)
        zone = self.lesion_zone(reading, size)
        gate = x.new_zeros(n, 1, size, size) if zone is None else torch.sigmoid(out[:, 3:] + GATE_BIAS) * zone
        return {"y": face + gate * (x - face), "face": face, "warped": warped, "pose": read, "gate": gate,
                "zone": zone, "reading": reading}

    def save(self, directory: str | Path, metadata: dict | None = None) -> Path:
        return save_model(self, {**asdict(self.config), "metadata": metadata or {}}, directory)

    @classmethod
    def from_uri(cls, uri: str, settings: storage.S3Settings | None = None) -> "MedSemDeIDNet":
        values, weights = read_model(uri, "MedSem-DeID model", settings)
        values.pop("metadata", None)
        model = cls(DeidNetConfig(**{**values, "widths": tuple(values["widths"])}))
        model.load_state_dict(weights)
        return model.eval()


def pose_grid(pose: torch.Tensor, size: int) -> torch.Tensor:
    """`F.grid_sample`'s grid that draws a frontal, centred face in `pose` (N, 4): rotation, log scale,
    shift x, y. The synthetic world's camera (`medeid.synth.canvas.Canvas`) maps each output pixel p to
    R(-rotation) (p - shift) / scale in the frontal face; this is that map, in the same pixel-centre
    coordinates (`align_corners=False`)."""
    rotation, scale, shift = pose[:, 0], pose[:, 1].exp(), pose[:, 2:4]
    cos, sin = torch.cos(-rotation) / scale, torch.sin(-rotation) / scale
    a = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)  # (N, 2, 2)
    theta = torch.cat([a, -(a @ shift[:, :, None])], 2)
    return F.affine_grid(theta, (len(pose), 3, size, size), align_corners=False)


def nearest_donors(images_uint8_nhwc: torch.Tensor, donor_skin: torch.Tensor, choices: int = DONOR_CHOICES
                   ) -> torch.Tensor:
    """(N, choices) indices of the donors (their `skin_tone`s) nearest each face's skin tone, nearest first."""
    distance = torch.cdist(skin_tone(images_uint8_nhwc), donor_skin)
    return distance.argsort(dim=1)[:, :min(choices, len(donor_skin))]


def skin_patch(size: int) -> tuple[slice, slice]:
    """Rows and columns of a square face crop's cheeks and nose: skin in every face."""
    return (slice(round(SKIN_ROWS[0] * size), round(SKIN_ROWS[1] * size)),
            slice(round(SKIN_COLUMNS[0] * size), round(SKIN_COLUMNS[1] * size)))


def to_donor_skin(x: torch.Tensor, donor: torch.Tensor) -> torch.Tensor:
    """x (N, 3, R, R in [-1, 1]) with each channel moved by the difference of the donor's and x's skin
    tones (`skin_patch`): what the photo would look like on the donor's skin, near enough."""
    rows, cols = skin_patch(x.shape[-1])

    def tone(image: torch.Tensor) -> torch.Tensor:
        return image[:, :, rows, cols].flatten(2).median(dim=2).values[:, :, None, None]

    return (x + tone(donor) - tone(x)).clamp(-1, 1)


def skin_tone(images_uint8_nhwc: torch.Tensor) -> torch.Tensor:
    """Median RGB of each face's cheeks and nose, float (N, 3)."""
    rows, cols = skin_patch(images_uint8_nhwc.shape[1])
    patch = images_uint8_nhwc[:, rows, cols].reshape(len(images_uint8_nhwc), -1, 3).float()
    return patch.median(dim=1).values if len(patch) else torch.zeros(0, 3)


def donor_bank(images: list[np.ndarray], size: int) -> torch.Tensor:
    """Donor faces (`medeid.models.deid.donors`) as the model's bank: uint8 (N, size, size, 3)."""
    if not images:
        raise ValueError("the donor bank is empty: MedSem-DeID needs synthetic (MeMa) faces to draw identities from")
    return torch.from_numpy(np.stack([cv2.resize(i, (size, size), interpolation=cv2.INTER_CUBIC) for i in images]))
