"""TrustMAE (Tan, Chen, Chen, Chen, "TrustMAE: A Noise-Resilient Defect Classification Framework using
Memory-Augmented Auto-Encoders with Trust Regions", WACV 2021): an autoencoder whose bottleneck can only say
what its memory of normal appearance holds.

Data flow for an input ``B×3×S×S`` in [−1, 1]:

* encoder: 3×3 stem (3 → ``width``), ``downsamplings`` 4×4 stride-2 convolutions doubling the channels up to
  512 (with width 32: 32 → 64 → 128 → 256 → 512 → 512, an S/32 × S/32 × 512 latent), then ``residual_blocks``
  residual blocks; every convolution is followed by BatchNorm (folded at export) and ReLU, the latent ``z`` by
  none;
* memory (:class:`export.nn.soft_memory.SoftMemory`): every latent position is replaced by a soft combination of
  its ``memory_top_k`` nearest items of ``memory_items`` learnt 512-d items;
* decoder: the mirror (×2 upsampling and a 3×3 convolution per stage), a 3×3 convolution to RGB and tanh;
* anomaly map: the squared reconstruction error (mean over RGB) times the perceptual distance between input and
  reconstruction (:class:`export.nn.lpips_distance.LpipsDistance` on levels 0…``perceptual_levels − 1`` of the
  frozen shared trunk, EfficientNet-Lite0 with ImageNet weights by default), smoothed with a Gaussian of
  ``sigma`` px at 256 px (scaled with the image size; the paper smooths nothing: the product of two
  per-pixel errors is speckled, and a good image's highest speckle decided its score). The image score is the
  mean of the smoothed map's highest 3.7 % (600 pixels at 128 px; ``top_k`` sets a number; picked on validation
  sets of other seeds, where it beat the maximum), an unbounded distance.

The same forward pass trains, evaluates and is exported. For an FP16 export ``dtype`` (the autoencoder's and
the trunk's precision) becomes FP16; the memory read, the unit normalisation and the error map stay FP32.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from export.data.batches import SYMMETRIC
from export.graph.score_head import ScoreHead
from export.models.base import AnomalyModel
from export.nn.blocks import upsample2x
from export.nn.lpips_distance import LpipsDistance
from export.nn.smoothing import GaussianSmoothing, sigma_pixels
from export.nn.soft_memory import SoftMemory
from export.nn.trunk import Trunk, untrained_trunk

LATENT_CHANNELS = 512
SCORE_AREA = 600 / 128**2  # the image score's share of the map, picked on validation sets at 128 px


@dataclass(frozen=True)
class TrustMAEConfig:
    """What defines a TrustMAE model besides its weights. The defaults are the CPU preset (128 px, stem width 16:
    16 → 32 → 64 → 128 → 256 → 512); ``width = 32`` is the full-size choice (32 → 64 → … → 512 → 512)."""

    image_size: int = 128
    width: int = 16
    downsamplings: int = 5
    residual_blocks: int = 3
    memory_items: int = 64
    memory_top_k: int = 3
    trunk: str = "efficientnet_lite0"
    perceptual_levels: int = 4
    sigma: float = field(
        default=8.0, metadata={"help": "σ of the map's Gaussian smoothing in px at 256 px (scaled; 0: none)"}
    )
    score: str = "top_k_mean"
    top_k: int | None = field(
        default=None,
        metadata={"help": "pixels the image score averages, the highest (none: 3.7 %% of the map, 600 at 128 px)"},
    )

    def to_dict(self) -> dict:
        return asdict(self)

    def score_pixels(self) -> int:
        """How many of the highest pixels the image score averages: ``top_k``, or 3.7 % of the map (600 at 128 px,
        2,400 at 256 px)."""
        return self.top_k if self.top_k is not None else round(SCORE_AREA * self.image_size**2)

    def sigma_pixels(self) -> float:
        """σ of the map's smoothing at this image size (8 px at 256 px)."""
        return sigma_pixels(self.sigma, self.image_size)

    def widths(self) -> list[int]:
        """Channels of the stem and after each down-sampling (the last is the latent's)."""
        return [min(self.width << i, LATENT_CHANNELS) for i in range(self.downsamplings + 1)]


def conv_bn_relu(c_in: int, c_out: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride, padding=(kernel - 1) // 2 if stride == 1 else 1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class ResidualBlock(nn.Module):
    """x + BN(conv(ReLU(BN(conv(x))))), 3×3 convolutions keeping the channels."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_bn_relu(channels, channels, 3),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Encoder(nn.Sequential):
    def __init__(self, config: TrustMAEConfig) -> None:
        widths = config.widths()
        layers: list[nn.Module] = [conv_bn_relu(3, widths[0], 3)]
        layers += [conv_bn_relu(a, b, 4, stride=2) for a, b in zip(widths, widths[1:], strict=False)]
        layers += [ResidualBlock(widths[-1]) for _ in range(config.residual_blocks)]
        super().__init__(*layers)


class UpBlock(nn.Sequential):
    """×2 upsampling, 3×3 convolution, BatchNorm, ReLU."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(conv_bn_relu(c_in, c_out, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(upsample2x(x))


class Decoder(nn.Sequential):
    def __init__(self, config: TrustMAEConfig) -> None:
        widths = config.widths()[::-1]
        layers: list[nn.Module] = [UpBlock(a, b) for a, b in zip(widths, widths[1:], strict=False)]
        layers += [nn.Conv2d(widths[-1], 3, 3, padding=1), nn.Tanh()]
        super().__init__(*layers)


class TrunkLevels(nn.Module):
    """The frozen shared trunk as a feature extractor: the outputs of its first ``count`` levels."""

    def __init__(self, trunk: Trunk, count: int) -> None:
        super().__init__()
        self.trunk, self.count = trunk, count

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.trunk.features(x, deepest=self.count - 1)


class TrustMAE(AnomalyModel):
    """``forward(x) → (reconstruction, z, distances)``; ``anomaly_map`` is squared error × perceptual distance,
    smoothed."""

    score_kind = "distance"
    normalisation = SYMMETRIC
    export_precisions = ("fp32", "fp16")

    def __init__(
        self,
        config: TrustMAEConfig,
        trunk: Trunk | None = None,
        memory_items: int | None = None,
        examples: torch.Tensor | None = None,
    ) -> None:
        """``examples``: a few good training images (``N×S×S×3`` uint8) kept to check FP16 exports on."""
        super().__init__()
        trunk = trunk if trunk is not None else untrained_trunk(config.trunk)
        self.keep_examples(examples, config.image_size)
        self.dtype = torch.float32
        self.config = config
        self.encoder = Encoder(config)
        self.memory = SoftMemory(memory_items or config.memory_items, LATENT_CHANNELS, config.memory_top_k)
        self.decoder = Decoder(config)
        self.perceptual = LpipsDistance(TrunkLevels(trunk, config.perceptual_levels), SYMMETRIC)
        self.perceptual.requires_grad_(False)
        self.smoothing = GaussianSmoothing(config.sigma_pixels())

    def train(self, mode: bool = True) -> TrustMAE:
        """Like ``nn.Module.train``; the frozen trunk stays in eval mode (fixed BatchNorm statistics)."""
        super().train(mode)
        self.perceptual.eval()
        return self

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z = self.encoder(x.to(self.dtype))
        read, distances = self.memory(z)
        return self.decoder(read), z, distances

    def error_map(self, x: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
        """Squared error (mean over RGB) × perceptual distance, smoothed: ``B×1×S×S`` FP32."""
        squared = (x.float() - reconstruction.float()).pow(2).mean(dim=1, keepdim=True)
        return self.smoothing(squared * self.perceptual(x, reconstruction))

    def anomaly_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.error_map(x, self(x)[0])

    def prepare_for_export(self, precision: str) -> TrustMAE:
        """BatchNorm folded; for FP16 the autoencoder and the trunk run in half precision."""
        model = super().prepare_for_export(precision)
        if precision == "fp16":
            model.dtype = model.perceptual.dtype = torch.float16
            for part in (model.encoder, model.decoder, model.perceptual.extractor):
                part.half()
        return model

    @property
    def score_head(self) -> ScoreHead:
        """The mean of the map's highest 3.7 % (or ``top_k`` pixels), or with ``score = "max"`` its maximum."""
        return ScoreHead(self.config.score, self.config.score_pixels())

    def details(self) -> dict:
        return {
            "memory_items": self.config.memory_items,
            "memory_items_kept": int(self.memory.items.shape[0]),
            "memory_top_k": self.config.memory_top_k,
            "perceptual_levels": self.config.perceptual_levels,
            "smoothing_sigma_px": self.smoothing.sigma,
            **self.perceptual.extractor.trunk.details(),
        }
