"""Face recognisers for the synthetic world, in ArcFace's layout, and the additive angular margin loss.

Input: (N, 3, 112, 112) RGB scaled as (x - 127.5) / 127.5, the layout insightface's ArcFaceONNX feeds.
Output: (N, 512) embeddings (not normalised, as ArcFace exports them). Two architectures, so the
held-out evaluator does not share the training recogniser's inductive biases:

- `resnet`: residual basic blocks;
- `mobile`: depthwise-separable inverted residuals, as in MobileFaceNet.

Both end in a global depthwise convolution (GDC) and a linear embedding with batch norm.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

INPUT_SIZE = 112
TORCH_WEIGHTS = "recognizer.safetensors"  # beside the ONNX file in a pack (`medeid.models.export`)
EMBEDDING_DIM = 512
ARCHITECTURES = ("resnet", "mobile")


def _conv_bn(cin: int, cout: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, 3, stride, 1, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.PReLU(cout))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(_conv_bn(cin, cout, stride), _conv_bn(cout, cout, act=False))
        self.skip = (nn.Identity() if stride == 1 and cin == cout else
                     nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))
        self.act = nn.PReLU(cout)

    def forward(self, x):
        return self.act(self.body(x) + self.skip(x))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int = 2):
        super().__init__()
        hidden = cin * expand
        self.body = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.PReLU(hidden),
            _conv_bn(hidden, hidden, stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout),
        )
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


class Recognizer(nn.Module):
    """A small face recogniser: a stem, three strided stages down to 7 x 7, GDC, 512-d embedding."""

    def __init__(self, architecture: str = "resnet", width: int = 16):
        super().__init__()
        if architecture not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {architecture!r}; expected one of {ARCHITECTURES}")
        self.architecture, self.width = architecture, width
        w = width
        # Synthetic identities live in coarse shape and colour: three strided stages are enough, and
        # keep a training step cheap on two CPU cores.
        self.stem = _conv_bn(3, w, stride=2)  # 56 x 56
        if architecture == "resnet":
            self.stages = nn.Sequential(BasicBlock(w, 2 * w, 2), BasicBlock(2 * w, 4 * w, 2),
                                        BasicBlock(4 * w, 8 * w, 2))  # 7 x 7
        else:
            # A strided and a residual block a stage: with one (a single 3 x 3 depthwise conv a stage) the
            # evaluator reached TAR ~0.8 at FAR 1e-3 on the demo archive, ~0.96 with two.
            self.stages = nn.Sequential(*(layer for cin, cout in ((w, 2 * w), (2 * w, 4 * w), (4 * w, 8 * w))
                                          for layer in (InvertedResidual(cin, cout, 2),
                                                        InvertedResidual(cout, cout, 1))))  # 7 x 7
        channels = 8 * w
        self.gdc = nn.Sequential(nn.Conv2d(channels, channels, 7, groups=channels, bias=False),
                                 nn.BatchNorm2d(channels))
        self.embed = nn.Linear(channels, EMBEDDING_DIM, bias=False)
        self.bn = nn.BatchNorm1d(EMBEDDING_DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.gdc(self.stages(self.stem(x))).flatten(1)
        return self.bn(self.embed(x))


class ArcMarginLoss(nn.Module):
    """ArcFace: cross-entropy on cos(theta + m) for the true class, scaled by s (Deng et al., 2019)."""

    def __init__(self, num_classes: int, dim: int = EMBEDDING_DIM, scale: float = 32.0, margin: float = 0.4):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, dim))
        nn.init.xavier_uniform_(self.weight)
        self.scale, self.margin = scale, margin

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cosine = F.linear(F.normalize(embeddings), F.normalize(self.weight)).clamp(-1 + 1e-7, 1 - 1e-7)
        theta = torch.acos(cosine)
        target = torch.cos(theta + self.margin)
        # Past pi - m the margin would make the target easier again: fall back to CosFace's form.
        target = torch.where(theta + self.margin < math.pi, target, cosine - self.margin * math.sin(self.margin))
        one_hot = F.one_hot(labels, cosine.shape[1]).to(cosine.dtype)
        logits = self.scale * (one_hot * target + (1 - one_hot) * cosine)
        return F.cross_entropy(logits, labels), cosine


def to_input(images_uint8_rgb: torch.Tensor) -> torch.Tensor:
    """(N, H, W, 3) uint8 RGB -> (N, 3, 112, 112) float in ArcFace's scaling."""
    x = images_uint8_rgb.permute(0, 3, 1, 2).float()
    if x.shape[-1] != INPUT_SIZE or x.shape[-2] != INPUT_SIZE:
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False, antialias=True)
    return (x - 127.5) / 127.5


def load_torch_recognizer(pack_dir: str | Path) -> Recognizer:
    """The torch recogniser of a pack exported by medeid (eval mode), for losses that need gradients."""
    from safetensors.torch import load_file

    pack = Path(pack_dir)
    weights = pack / TORCH_WEIGHTS
    if not weights.exists():
        raise FileNotFoundError(f"the recogniser pack at {pack} has no {TORCH_WEIGHTS}: packs exported before "
                                f"MedSem-DeID carry ONNX only; re-run jobs/train_identity.py")
    info = json.loads((pack / "pack.json").read_text())
    model = Recognizer(info["architecture"], info["width"])
    model.load_state_dict(load_file(str(weights)))
    return model.eval()
