"""MemSeg (Yang et al., "MemSeg: A semi-supervised method for image surface defect detection using
differences and commonalities", 2023), as the paper and the authors' released inference code define it.

Data flow for a normalised ``B×3×S×S`` input (S = 256 by default):

* Trunk (:mod:`export.nn.trunk`; ResNet18 as in the paper, or EfficientNet-Lite0): level 0 (S/2), levels 1…3
  (S/4 … S/16) and level 4 (S/32). Levels 0…3 are frozen (unless ``train_trunk``), level 4 trains. The fusion and
  decoder widths follow the trunk's channels (ResNet18: the paper's 64/128/256 and 512; EfficientNet-Lite0:
  24/40/112 and 320, a narrower network than the paper's).
* Memory: the smoothed layer1…layer3 features of N good images. Per scale the nearest sample by L1 sum gives
  DI* = |MI* − II|; ``[II, DI*] × 100`` (the released code's scale) goes to the fusion.
* Multi-scale feature fusion: per scale a 3×3 conv keeping channels, weighted by coordinate attention computed
  from its input, then two conv blocks to the level's channels; top-down fusion (upsample, conv, add).
* Spatial attention: M3 = mean_c(DI3*), M2 = mean_c(DI2*) ⊙ up(M3), M1 = mean_c(DI1*) ⊙ up(M2) weight the fused
  features of their scale.
* Decoder: U-Net of bilinear upsampling and conv-BN-ReLU blocks with the fused features and the stem output as
  skips; 2 output channels at S×S; softmax channel 1 is the anomaly map.

The one forward pass serves training and export alike. For export (:mod:`export.models.memseg.deploy`) three
attributes change what it computes in exact arithmetic not at all: ``dtype`` (the convolutions' precision; the
memory distances, the attention products and the softmax stay FP32), ``feature_scale`` (1 once the ×100 has
moved into the weights) and the spatial attention's power-of-two ``scale``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from export.data.batches import normalise
from export.models.base import AnomalyModel
from export.models.memseg.deploy import prepare_for_export
from export.nn.blocks import ConvBNReLU, CoordinateAttention, upsample2x
from export.nn.memory import MemoryBank, smooth
from export.nn.trunk import Trunk


@dataclass(frozen=True)
class MemSegConfig:
    """What defines a MemSeg model besides its weights."""

    image_size: int = 256
    trunk: str = "resnet18"
    memory_samples: int = 30
    feature_scale: float = 100.0
    top_k: int = 100
    train_trunk: bool = False
    score: str = "top_k_mean"

    def to_dict(self) -> dict:
        return asdict(self)


class FusionBlock(nn.Module):
    """One scale of the multi-scale feature fusion: attention-weighted conv, then two conv blocks to C."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2 * channels, 2 * channels, 3, padding=1)
        self.attention = CoordinateAttention(2 * channels)
        self.project = nn.Sequential(ConvBNReLU(2 * channels, channels), ConvBNReLU(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows, cols = self.attention(x)
        return self.project(self.conv(x) * rows * cols)


class FeatureFusion(nn.Module):
    """Fuses ``[II, DI*]`` of three scales top-down and weights each scale by its spatial attention."""

    def __init__(self, channels: tuple[int, int, int]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(FusionBlock(c) for c in channels)
        self.top_down = nn.ModuleList(nn.Conv2d(channels[i + 1], channels[i], 3, padding=1) for i in range(2))

    def forward(self, concatenated: list[torch.Tensor], attention: list[torch.Tensor]) -> list[torch.Tensor]:
        fused = [block(x) for block, x in zip(self.blocks, concatenated, strict=True)]
        for i in (1, 0):
            fused[i] = fused[i] + self.top_down[i](upsample2x(fused[i + 1]))
        return [f * a for f, a in zip(fused, attention, strict=True)]


class SpatialAttention(nn.Module):
    """M3 = mean_c(DI3*), M2 = mean_c(DI2*) ⊙ up(M3), M1 = mean_c(DI1*) ⊙ up(M2), each divided by its
    ``scale`` (1 in training; a power of two chosen at export so FP16 sees values near 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = [1.0, 1.0, 1.0]

    def forward(self, differences: list[torch.Tensor]) -> list[torch.Tensor]:
        attention = [d.mean(dim=1, keepdim=True) for d in differences]
        for i in (1, 0):
            attention[i] = attention[i] * upsample2x(attention[i + 1])
        return [a / c if c != 1.0 else a for a, c in zip(attention, self.scale, strict=True)]


class Decoder(nn.Module):
    """U-Net decoder: level 4 → S/16 … S/2 with skips (fused scales, level 0), then S with 2 output channels.
    ``channels`` are the trunk's five level widths (ResNet18: 64, 64, 128, 256, 512)."""

    def __init__(self, channels: tuple[int, ...]) -> None:
        super().__init__()
        steps = [(channels[i + 1], channels[i], channels[i]) for i in (3, 2, 1, 0)]  # in, out, skip channels
        self.ups = nn.ModuleList(ConvBNReLU(c_in, c_out) for c_in, c_out, _ in steps)
        self.merges = nn.ModuleList(ConvBNReLU(c_out + skip, c_out) for _, c_out, skip in steps)
        self.head = nn.Sequential(ConvBNReLU(channels[0], 32), nn.Conv2d(32, 2, 3, padding=1))

    def forward(self, deepest: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        x = deepest
        for up, merge, skip in zip(self.ups, self.merges, skips, strict=True):
            x = merge(torch.cat([up(upsample2x(x)), skip], dim=1))
        return self.head(upsample2x(x))


class MemSeg(AnomalyModel):
    """MemSeg: ``forward`` maps a normalised image batch to 2-channel logits at input size; ``anomaly_map`` is
    softmax channel 1, the defect probability."""

    score_kind = "probability"
    export_precisions = ("fp32", "fp16")

    def __init__(self, config: MemSegConfig, trunk: Trunk, memory_images: torch.Tensor) -> None:
        super().__init__()
        if trunk.name != config.trunk:
            raise ValueError(f"config names trunk {config.trunk}, given {trunk.name}")
        self.config = config
        self.trunk = trunk
        self.scale_channels = tuple(level.channels for level in trunk.levels[1:4])
        self.register_buffer("memory_images", memory_images.to(torch.uint8))  # N×H×W×3 RGB
        self.memory = MemoryBank(self.scale_channels, config.image_size, len(memory_images))
        self.fusion = FeatureFusion(self.scale_channels)
        self.spatial_attention = SpatialAttention()
        self.decoder = Decoder(tuple(level.channels for level in trunk.levels))
        self.dtype = torch.float32  # of the convolutions; FP16 only in an FP16 export
        self.feature_scale = config.feature_scale  # 1 once an export has moved it into the weights
        self.scales: dict = {}  # what an export chose (power-of-two rescaling), for the sidecar
        if not config.train_trunk:
            for module in trunk.frozen_modules():
                module.requires_grad_(False)

    def train(self, mode: bool = True) -> MemSeg:
        """Like ``nn.Module.train``, but conv1…layer3 keep their BatchNorm statistics (eval mode) even when
        their weights train, so the input's features and the memory's are always computed the same way."""
        super().train(mode)
        for module in self.trunk.frozen_modules():
            module.eval()
        return self

    @torch.no_grad()
    def refresh_memory(self, batch_size: int = 16) -> None:
        """Recompute the memory features from the memory images with the current trunk weights."""
        was_training = self.training
        self.eval()
        chunks = []
        for start in range(0, len(self.memory_images), batch_size):
            images = self.memory_images[start : start + batch_size].permute(0, 3, 1, 2)
            chunks.append(smooth(self.trunk.shallow(normalise(images).to(self.dtype))[1]))
        self.memory.store([torch.cat(scale).float() for scale in zip(*chunks, strict=True)])
        self.train(was_training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stem, shallow = self.trunk.shallow(x.to(self.dtype))
        deepest = self.trunk.deepest(shallow[-1])
        features = smooth(shallow)
        s = self.feature_scale
        differences = self.memory.differences(features)  # FP32: distances and their sums overflow FP16
        if s != 1.0:
            features, differences = [f * s for f in features], [d * s for d in differences]
        attention = [a.to(self.dtype) for a in self.spatial_attention(differences)]
        concatenated = [torch.cat([f, d.to(self.dtype)], dim=1) for f, d in zip(features, differences, strict=True)]
        skips = self.fusion(concatenated, attention)
        return self.decoder(deepest, [skips[2], skips[1], skips[0], stem])

    def anomaly_map(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self(x).float(), dim=1)[:, 1:2]

    def details(self) -> dict:
        return {"memory_samples": len(self.memory_images), **self.trunk.details()}

    def example_images(self) -> np.ndarray:
        return self.memory_images.cpu().numpy()

    def prepare_for_export(self, precision: str) -> MemSeg:
        return prepare_for_export(self, precision)

    def export_info(self) -> dict:
        return dict(self.scales)
