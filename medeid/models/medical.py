"""The medical model: Enc_med (a convolutional encoder of diagnosis-relevant appearance) with
classification heads (disease, laterality, severity) and a U-Net decoder that segments lesions.

One network, trained jointly: the segmentation task makes the encoder keep where the lesion is,
the heads make it keep what the disease is. Consumers take the part they need:
- MedSem-DeID loads `encoder` frozen and concatenates `encode(x)` (stride 8) with its image features;
- MeMa's plausibility filter uses `classify`; MeMa-Seg and the DeID evaluation use `segment`.

Saved as a folder: `config.json` beside `model.safetensors` (`save` / `from_uri`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from medeid import storage
from medeid.synth.conditions import DISEASES, LATERALITIES, SEVERITIES

CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"


@dataclass(frozen=True)
class MedicalNetConfig:
    image_size: int = 128
    widths: tuple[int, ...] = (16, 32, 64, 96)  # encoder stages at strides 2, 4, 8, 16
    num_diseases: int = len(DISEASES)
    num_lateralities: int = len(LATERALITIES)
    num_severities: int = len(SEVERITIES)

    @property
    def feature_channels(self) -> int:
        """Channels of `encode`'s output (stride 8): what MedSem-DeID concatenates."""
        return self.widths[2]


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


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
        self.disease_head = nn.Linear(w[-1], config.num_diseases)
        self.laterality_head = nn.Linear(w[-1], config.num_lateralities)
        self.severity_head = nn.Linear(w[-1], config.num_severities)
        # U-Net decoder: up from stride 16 to 2, then to full resolution beside the input.
        self.up3 = _block(w[3] + w[2], w[2])
        self.up2 = _block(w[2] + w[1], w[1])
        self.up1 = _block(w[1] + w[0], w[0])
        self.full = _block(w[0] + 3, w[0])
        self.mask_head = nn.Conv2d(w[0], 1, 1)

    @staticmethod
    def normalise(images_uint8_nhwc: torch.Tensor) -> torch.Tensor:
        """uint8 RGB (N, H, W, 3) -> the float input (N, 3, H, W) in [-1, 1]."""
        return images_uint8_nhwc.permute(0, 3, 1, 2).float() / 127.5 - 1.0

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Enc_med's medical semantic features at stride 8: (N, feature_channels, H/8, W/8)."""
        return self.encoder(x)[2]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f1, f2, f3, f4 = self.encoder(x)
        pooled = f4.mean(dim=(2, 3))
        d3 = self.up3(torch.cat([F.interpolate(f4, size=f3.shape[-2:], mode="bilinear"), f3], 1))
        d2 = self.up2(torch.cat([F.interpolate(d3, size=f2.shape[-2:], mode="bilinear"), f2], 1))
        d1 = self.up1(torch.cat([F.interpolate(d2, size=f1.shape[-2:], mode="bilinear"), f1], 1))
        d0 = self.full(torch.cat([F.interpolate(d1, size=x.shape[-2:], mode="bilinear"), x], 1))
        return {
            "disease": self.disease_head(pooled),
            "laterality": self.laterality_head(pooled),
            "severity": self.severity_head(pooled),
            "mask": self.mask_head(d0)[:, 0],  # logits, (N, H, W)
            "features": f3,
        }

    @torch.no_grad()
    def classify(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.forward(x)
        return {k: out[k].softmax(1) for k in ("disease", "laterality", "severity")}

    @torch.no_grad()
    def segment(self, x: torch.Tensor) -> torch.Tensor:
        """Boolean lesion masks (N, H, W)."""
        return self.forward(x)["mask"] > 0

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CONFIG_FILE).write_text(json.dumps(asdict(self.config), indent=1))
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(directory / WEIGHTS_FILE))
        return directory

    @classmethod
    def from_uri(cls, uri: str, settings: storage.S3Settings | None = None) -> "MedicalNet":
        """Load a saved model (local folder or S3 prefix) in eval mode."""
        directory = storage.local_copy(uri, settings)
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            if not (directory / name).exists():
                raise FileNotFoundError(f"{name} is missing from the medical model at {uri}")
        values = json.loads((directory / CONFIG_FILE).read_text())
        model = cls(MedicalNetConfig(**{**values, "widths": tuple(values["widths"])}))
        model.load_state_dict(load_file(str(directory / WEIGHTS_FILE)))
        return model.eval()
