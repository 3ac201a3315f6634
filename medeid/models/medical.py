"""The medical model: Enc_med (a convolutional encoder of diagnosis-relevant appearance) with
classification heads (disease, laterality, severity) and a U-Net decoder that segments lesions.

One network, trained jointly: the segmentation task makes the encoder keep where the lesion is,
the heads make it keep what the disease is. Consumers take the part they need:
- MedSem-DeID carries this model frozen: it concatenates the stride-8 encoder features (`forward`'s
  `features`, the same as `encode(x)`) with its image features and keeps the lesion `mask` finds;
- MeMa's plausibility filter uses `classify`; MeMa-Seg and the DeID evaluation use `segment`.

Saved as a folder: `config.json` beside `model.safetensors` (`save` / `from_uri`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medeid import storage
from medeid.models.folder import read_model, save_model
from medeid.pixels import to_signed
from medeid.synth.conditions import DISEASES, LATERALITIES, SEVERITIES

# The eye region of an aligned face crop, as fractions of it: brows to lower lids (upper-lid lesions
# reach the brows), both eyes and their canthi. Every sign but a lesion's edge lies inside: the
# medical model is trained to read only this and a lesion (`medeid.train.medical.mix_context`), and
# MedSem-DeID keeps it.
EYE_ROWS, EYE_COLUMNS = (0.32, 0.54), (0.2, 0.8)
EYE_FEATHER_PX = 1.5  # sigma of the eye region's soft edge


def eye_box(size: int) -> tuple[slice, slice]:
    """Rows and columns of the eye region of a `size`-pixel crop, unfeathered."""
    return (slice(round(EYE_ROWS[0] * size), round(EYE_ROWS[1] * size)),
            slice(round(EYE_COLUMNS[0] * size), round(EYE_COLUMNS[1] * size)))


def eye_region(size: int) -> np.ndarray:
    """Float mask (size, size) in [0, 1]: the eye region of a `size`-pixel crop, its edge feathered."""
    region = np.zeros((size, size), np.float32)
    region[eye_box(size)] = 1
    return cv2.GaussianBlur(region, (0, 0), EYE_FEATHER_PX)

@dataclass(frozen=True)
class MedicalNetConfig:
    image_size: int = 128
    widths: tuple[int, ...] = (16, 32, 64, 96)  # encoder stages at strides 2, 4, 8, 16
    # The periocular band of an aligned face crop, as fractions of its height: brows to cheeks.
    # Every sign the model looks for lies inside; the rest of the face only costs compute.
    band_top: float = 0.2
    band_height: float = 0.48
    num_diseases: int = len(DISEASES)
    num_lateralities: int = len(LATERALITIES)
    num_severities: int = len(SEVERITIES)

    def band_rows(self, height: int) -> tuple[int, int]:
        """First and end row of the band in an image `height` rows high (a multiple of 16 rows)."""
        top = round(self.band_top * height)
        rows = 16 * -(-round(self.band_height * height) // 16)
        return top, min(height, top + rows)

    @property
    def feature_channels(self) -> int:
        """Channels of the stride-8 features (`encode`, `forward`'s `features`): what MedSem-DeID concatenates."""
        return self.widths[2]


def _conv(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """Two 3x3 convolutions: the encoder's unit."""
    return nn.Sequential(*_conv(cin, cout, stride), *_conv(cout, cout))


class MedicalEncoder(nn.Module):
    """Enc_med: four strided stages; returns every stage's features (strides 2, 4, 8, 16)."""

    def __init__(self, widths: tuple[int, ...]):
        super().__init__()
        channels = (3, *widths)
        self.stages = nn.ModuleList(_block(channels[i], channels[i + 1], 2) for i in range(len(widths)))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


class MedicalNet(nn.Module):
    def __init__(self, config: MedicalNetConfig = MedicalNetConfig()):
        super().__init__()
        self.config = config
        w = config.widths
        self.encoder = MedicalEncoder(w)
        # Heads see average and max pooling (the signs are small, and averaging alone dilutes them)
        # and the segmenter's strongest lesion logit, so "is there a tumour" uses the pixel evidence.
        pooled = 2 * w[-1] + 1
        self.disease_head = nn.Linear(pooled, config.num_diseases)
        self.laterality_head = nn.Linear(pooled, config.num_lateralities)
        self.severity_head = nn.Linear(pooled, config.num_severities)
        # U-Net decoder: up from stride 16 to 2, then to full resolution beside the input. One
        # convolution a level: the high-resolution levels dominate the cost, and masks are simple.
        self.up3 = nn.Sequential(*_conv(w[3] + w[2], w[2]))
        self.up2 = nn.Sequential(*_conv(w[2] + w[1], w[1]))
        self.up1 = nn.Sequential(*_conv(w[1] + w[0], w[0]))
        self.full = nn.Sequential(*_conv(w[0] + 3, 8))
        self.mask_head = nn.Conv2d(8, 1, 1)
        # Start from "background almost everywhere" (p = 0.02), the prior of a few lesion pixels in
        # thousands, as detectors do (RetinaNet's prior bias): the lesion loss then leads from step one.
        nn.init.constant_(self.mask_head.bias, -4.0)

    def prepare(self, images_uint8_nhwc: torch.Tensor) -> torch.Tensor:
        """Aligned face crops, uint8 RGB (N, H, W, 3) -> the model's input: the band, in [-1, 1]."""
        top, end = self.config.band_rows(images_uint8_nhwc.shape[1])
        return to_signed(images_uint8_nhwc[:, top:end])

    def band(self, masks: torch.Tensor) -> torch.Tensor:
        """The band rows of full-image masks (N, H, W), matching `prepare`."""
        top, end = self.config.band_rows(masks.shape[1])
        return masks[:, top:end]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Enc_med's medical semantic features of `prepare`d input, at stride 8: (N, C, H/8, W/8)."""
        return self.encoder(x)[2]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f1, f2, f3, f4 = self.encoder(x)
        d3 = self.up3(torch.cat([F.interpolate(f4, size=f3.shape[-2:], mode="bilinear"), f3], 1))
        d2 = self.up2(torch.cat([F.interpolate(d3, size=f2.shape[-2:], mode="bilinear"), f2], 1))
        d1 = self.up1(torch.cat([F.interpolate(d2, size=f1.shape[-2:], mode="bilinear"), f1], 1))
        d0 = self.full(torch.cat([F.interpolate(d1, size=x.shape[-2:], mode="bilinear"), x], 1))
        mask = self.mask_head(d0)[:, 0]  # logits, (N, H, W)
        pooled = torch.cat([f4.mean(dim=(2, 3)), f4.amax(dim=(2, 3)), mask.amax(dim=(1, 2))[:, None]], 1)
        return {
            "disease": self.disease_head(pooled),
            "laterality": self.laterality_head(pooled),
            "severity": self.severity_head(pooled),
            "mask": mask,
            "features": f3,
        }

    @torch.no_grad()
    def classify(self, images_uint8_nhwc: torch.Tensor) -> dict[str, torch.Tensor]:
        """Class probabilities for whole face crops."""
        out = self.forward(self.prepare(images_uint8_nhwc))
        return {k: out[k].softmax(1) for k in ("disease", "laterality", "severity")}

    @torch.no_grad()
    def segment(self, images_uint8_nhwc: torch.Tensor) -> torch.Tensor:
        """Boolean lesion masks (N, H, W) of whole face crops: nothing outside the band."""
        masks = torch.zeros(images_uint8_nhwc.shape[:3], dtype=torch.bool)
        top, end = self.config.band_rows(images_uint8_nhwc.shape[1])
        masks[:, top:end] = self.forward(self.prepare(images_uint8_nhwc))["mask"] > 0
        return masks

    def save(self, directory: str | Path) -> Path:
        return save_model(self, asdict(self.config), directory)

    @classmethod
    def from_uri(cls, uri: str, settings: storage.S3Settings | None = None) -> "MedicalNet":
        """Load a saved model (local folder or S3 prefix) in eval mode."""
        values, weights = read_model(uri, "medical model", settings)
        model = cls(MedicalNetConfig(**{**values, "widths": tuple(values["widths"])}))
        model.load_state_dict(weights)
        return model.eval()
