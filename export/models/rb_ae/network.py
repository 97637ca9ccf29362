"""RB-AE (Luo, Yao, Yu, Wang, "Reference-Based Autoencoder for Surface Defect Detection"): an autoencoder whose
features are repaired by attending to the features of one defect-free reference image.

Data flow for a normalised ``B×3×S×S`` input in [−1, 1] (S a multiple of 64; 128 on the CPU preset):

* **Encoder** [III-C]: 5 levels of two conv3×3-BN-ReLU, widths ``width``·(1, 2, 4, 8, 8): the paper's
  32/64/128/256/256 at ``width`` 32 (the GPU preset), half that on the CPU preset (``width`` 16, a quarter of the
  FLOPs); level 1 at stride 1 (S), levels 2–5 at stride 2 (S/2 … S/16).
* **Reference-based feature repair** (RBFRM, Eq. 3–5, :mod:`export.nn.reference_attention`) at levels 3–5 with
  ``K = 2`` and ``K = 4``: each K×K patch of the input's features becomes the softmax(10·cosine)-weighted sum of
  the reference's K×K patches. The reference image is a buffer of the model; its patch banks are recomputed from
  it with :meth:`RBAE.refresh_reference` (non-persistent buffers, constants in the exported graph).
* **Feature fusion** (FFM, Eq. 6–8): ``F_U = F_d + F_rep2 + F_rep4`` → 5×5 conv to 2·``width`` channels (the
  paper's 64), ReLU → one 5×5 conv to the three C-channel maps (the paper's three convs side by side) → Softmax
  over the stacked axis → ``Σ Ā ⊙ (F_d, F_rep2, F_rep4)``.
* **Decoder**: repaired level 5, ×2 upsampling and conv-BN-ReLU per level (4·``width`` channels at S/8, halved at
  each level), repaired levels 4 and 3 concatenated on the way up (no skips from levels 1–2: they would carry the
  defect through), 3×3 conv to RGB, tanh.
* **Anomaly map** (MSFDM, Eq. 10–11): encoder levels 1–3 of the input and of its reconstruction, concatenated, each
  scale through its own segmentation head (conv-BN-ReLU, 1×1 conv to 2 logits); per scale the softmax defect
  probability, ``AM = 0.2·AM1 + 0.2·up(AM2) + 0.6·up(AM3)``: a probability in [0, 1]. With ``map =
  "difference"`` (not the paper's; the heads are still trained, but not read) the same weights combine the
  per-scale mean squared feature differences of input and reconstruction, upsampled bilinearly and smoothed with
  a Gaussian of ``sigma`` px at 256 px, in FP32: an unbounded distance.

The one forward pass serves training, evaluation and export. For an FP16 export only ``dtype`` changes (the
convolutions' precision); the reference attention and the softmaxes stay FP32.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from export.data.batches import SYMMETRIC, normalise
from export.errors import DataError, UserError
from export.graph.folding import fold_batchnorm
from export.models.base import AnomalyModel
from export.nn.blocks import ConvBNReLU, upsample2x
from export.nn.reference_attention import ReferenceAttention
from export.nn.smoothing import GaussianSmoothing, check_sigma, sigma_pixels

WIDTH_FACTORS = (1, 2, 4, 8, 8)  # encoder levels 1–5, times ``width`` (the paper: 32/64/128/256/256)
REPAIRED_LEVELS = (2, 3, 4)  # levels 3–5, 0-based
MAP_WEIGHTS = (0.2, 0.2, 0.6)  # AM1, AM2, AM3 (Eq. 11)
PATCH_SIZES = (2, 4)  # K of the reference attention
MAPS = ("segmentation", "difference")
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16}


@dataclass(frozen=True)
class RBAEConfig:
    """What defines an RB-AE besides its weights; the defaults are the CPU preset (128 px)."""

    image_size: int = 128
    width: int = 16
    attention_temperature: float = 10.0
    top_k: int = 100
    score: str = "top_k_mean"
    map: str = field(
        default="segmentation",
        metadata={
            "help": "segmentation: the paper's MSFDM heads (a probability); difference: the heads' weights over "
            "the feature differences of input and reconstruction (a distance; better on irregular textures)"
        },
    )
    sigma: float = field(default=8.0, metadata={"help": "σ of the difference map's smoothing in px at 256 px"})

    def __post_init__(self) -> None:
        if self.map not in MAPS:
            raise DataError(f"--map {self.map}: use one of {', '.join(MAPS)}")
        check_sigma(self.sigma, self.image_size)
        if self.image_size < 64 or self.image_size % 64:
            raise DataError(f"--image-size {self.image_size}: must be a multiple of 64 (level 5 in 4×4 patches)")
        if self.width < 4:
            raise DataError(f"--width {self.width}: at least 4")

    def to_dict(self) -> dict:
        return asdict(self)

    def widths(self) -> tuple[int, ...]:
        """Channels of encoder levels 1–5."""
        return tuple(self.width * f for f in WIDTH_FACTORS)


def conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class Encoder(nn.Module):
    """Five levels of two conv-BN-ReLU; ``forward(x, levels)`` returns the first ``levels`` outputs."""

    def __init__(self, widths: tuple[int, ...]) -> None:
        super().__init__()
        channels = (3, *widths)
        self.levels = nn.ModuleList(
            nn.Sequential(conv_bn_relu(c_in, c, 1 if i == 0 else 2), conv_bn_relu(c, c))
            for i, (c_in, c) in enumerate(zip(channels, channels[1:], strict=False))
        )

    def forward(self, x: torch.Tensor, levels: int = len(WIDTH_FACTORS)) -> list[torch.Tensor]:
        features = []
        for level in self.levels[:levels]:
            x = level(x)
            features.append(x)
        return features


class FeatureFusion(nn.Module):
    """FFM: softmax weights over (features, repaired with K = 2, repaired with K = 4) from their sum."""

    def __init__(self, channels: int, hidden: int, candidates: int) -> None:
        super().__init__()
        self.candidates = candidates
        self.squeeze = nn.Sequential(nn.Conv2d(channels, hidden, 5, padding=2), nn.ReLU(inplace=True))
        self.weights = nn.Conv2d(hidden, candidates * channels, 5, padding=2)

    def forward(self, candidates: list[torch.Tensor]) -> torch.Tensor:
        stacked = torch.stack(candidates, dim=1)  # B×3×C×H×W
        logits = self.weights(self.squeeze(stacked.sum(dim=1)))
        weights = torch.softmax(logits.float().unflatten(1, (self.candidates, -1)), dim=1)
        return (weights.to(stacked.dtype) * stacked).sum(dim=1)


class Decoder(nn.Module):
    """Repaired levels 5, 4, 3 → reconstruction ``B×3×S×S`` in [−1, 1]."""

    def __init__(self, widths: tuple[int, ...]) -> None:
        super().__init__()
        c3, c4, c5 = widths[2:]
        width = c3  # channels at S/8, halved at each ×2 upsampling
        self.up5 = ConvBNReLU(c5, width)  # S/8
        self.merge4 = ConvBNReLU(width + c4, width)
        self.up4 = ConvBNReLU(width, width // 2)  # S/4
        self.merge3 = ConvBNReLU(width // 2 + c3, width // 2)
        self.up3 = ConvBNReLU(width // 2, width // 4)  # S/2
        self.up2 = ConvBNReLU(width // 4, width // 8)  # S
        self.out = nn.Conv2d(width // 8, 3, 3, padding=1)

    def forward(self, level3: torch.Tensor, level4: torch.Tensor, level5: torch.Tensor) -> torch.Tensor:
        x = self.merge4(torch.cat([self.up5(upsample2x(level5)), level4], dim=1))
        x = self.merge3(torch.cat([self.up4(upsample2x(x)), level3], dim=1))
        x = self.up2(upsample2x(self.up3(upsample2x(x))))
        return torch.tanh(self.out(x))


class SegmentationHead(nn.Sequential):
    """``[Φ(x), Φ(x̂)]`` of one scale → 2 logits (good, defect)."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__(ConvBNReLU(2 * channels, hidden), nn.Conv2d(hidden, 2, 1))


@dataclass
class RBAEOutput:
    """One forward pass: the input's encoder features, the repaired levels 3–5, the reconstruction and the
    segmentation logits of scales 1–3 (training needs them all; the anomaly map only the logits)."""

    features: list[torch.Tensor]
    repaired: list[torch.Tensor]
    reconstruction: torch.Tensor
    logits: list[torch.Tensor]
    rebuilt: list[torch.Tensor]  # encoder levels 1–3 of the reconstruction


class RBAE(AnomalyModel):
    """RB-AE: ``forward`` → :class:`RBAEOutput`; ``anomaly_map`` is the MSFDM defect probability, or with ``map =
    "difference"`` the weighted feature differences (then ``score_kind`` is ``distance``)."""

    score_kind = "probability"
    normalisation = SYMMETRIC
    export_precisions = ("fp32", "fp16")

    def __init__(self, config: RBAEConfig, reference_image: torch.Tensor | None = None) -> None:
        super().__init__()
        self.config = config
        size = config.image_size
        if reference_image is None:
            reference_image = torch.zeros(size, size, 3, dtype=torch.uint8)
        self.register_buffer("reference_image", reference_image.to(torch.uint8))  # S×S×3 RGB
        self.attention = nn.ModuleList(
            nn.ModuleList(ReferenceAttention(k, config.attention_temperature) for k in PATCH_SIZES)
            for _ in REPAIRED_LEVELS
        )
        widths, hidden = config.widths(), 2 * config.width  # FFM's 64 channels at the paper's width 32
        self.encoder = Encoder(widths)
        self.fusion = nn.ModuleList(FeatureFusion(widths[i], hidden, 1 + len(PATCH_SIZES)) for i in REPAIRED_LEVELS)
        self.decoder = Decoder(widths)
        self.heads = nn.ModuleList(SegmentationHead(c, config.width) for c in widths[:3])
        self.dtype = torch.float32  # of the convolutions; FP16 only in an FP16 export
        if config.map == "difference":
            self.score_kind = "distance"
            self.smoothing = GaussianSmoothing(sigma_pixels(config.sigma, size))
        self.encoder_frozen = False
        self.refresh_reference()

    def train(self, mode: bool = True) -> RBAE:
        """Like ``nn.Module.train``; a frozen encoder keeps its BatchNorm statistics (eval mode)."""
        super().train(mode)
        if self.encoder_frozen:
            self.encoder.eval()
        return self

    def freeze_encoder(self) -> None:
        """Training phase 2: the encoder, and with it the reference's patch banks, stop changing."""
        self.encoder_frozen = True
        self.encoder.requires_grad_(False)
        self.train(self.training)

    def set_reference(self, image: np.ndarray) -> None:
        """Make ``image`` (S×S×3 RGB uint8) the reference and recompute its patch banks."""
        self.reference_image.copy_(torch.from_numpy(np.ascontiguousarray(image)))
        self.refresh_reference()

    @torch.no_grad()
    def refresh_reference(self) -> None:
        """Recompute the patch banks of every repaired level and K from the reference image."""
        was_training = self.training
        self.eval()
        image = normalise(self.reference_image.permute(2, 0, 1)[None], SYMMETRIC).to(self.dtype)
        features = self.encoder(image)
        for level, attentions in zip(REPAIRED_LEVELS, self.attention, strict=True):
            for attention in attentions:
                attention.store(features[level])
        self.train(was_training)

    def repair(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """RBFRM and FFM at levels 3–5: the repaired features."""
        repaired = []
        for level, attentions, fusion in zip(REPAIRED_LEVELS, self.attention, self.fusion, strict=True):
            f = features[level]
            repaired.append(fusion([f, *(attention(f) for attention in attentions)]))
        return repaired

    def forward(self, x: torch.Tensor, heads: bool = True) -> RBAEOutput:
        """One pass; without ``heads`` the segmentation heads are not run (``logits`` empty)."""
        features = self.encoder(x.to(self.dtype))
        repaired = self.repair(features)
        reconstruction = self.decoder(*repaired)
        rebuilt = self.encoder(reconstruction, levels=len(self.heads))
        pairs = zip(self.heads, features, rebuilt, strict=False) if heads else ()
        logits = [head(torch.cat([f, g], dim=1)) for head, f, g in pairs]
        return RBAEOutput(features, repaired, reconstruction, logits, rebuilt)

    def anomaly_map(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        out = self(x, heads=self.config.map == "segmentation")
        if self.config.map == "difference":
            scales = [
                (f.float() - g.float()).pow(2).mean(dim=1, keepdim=True)
                for f, g in zip(out.features, out.rebuilt, strict=False)
            ]
        else:
            scales = [torch.softmax(logits.float(), dim=1)[:, 1:2] for logits in out.logits]
        maps = [m if m.shape[2:] == size else F.interpolate(m, size=size, mode="bilinear") for m in scales]
        anomaly_map = sum(w * m for w, m in zip(MAP_WEIGHTS, maps, strict=True))
        return self.smoothing(anomaly_map) if self.config.map == "difference" else anomaly_map

    def details(self) -> dict:
        return {"patch_sizes": list(PATCH_SIZES), "attention_temperature": self.config.attention_temperature}

    def example_images(self) -> np.ndarray:
        return self.reference_image.cpu().numpy()[None]

    def prepare_for_export(self, precision: str) -> RBAE:
        """A copy for tracing: eval mode, BatchNorm folded, the patch banks recomputed (FP32 constants), the
        convolutions at ``precision``."""
        if precision not in PRECISIONS:
            raise UserError(f"RB-AE exports in {', '.join(PRECISIONS)} only, not {precision}")
        model = copy.deepcopy(self).float().eval()
        fold_batchnorm(model)
        model.refresh_reference()
        model.dtype = PRECISIONS[precision]
        for part in (model.encoder, model.fusion, model.decoder, model.heads):
            part.to(model.dtype)
        return model
