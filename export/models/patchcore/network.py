"""PatchCore (Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022): a memory bank of
locally aware patch features of good images, and the distance of each test patch to its nearest bank vector.

Data flow for a normalised ``B×3×S×S`` input:

* Trunk (frozen, ImageNet weights by default): two consecutive middle levels (``levels``; ``1,2`` = strides 4
  and 8), each averaged over its 3×3 neighbourhood, the deeper one upsampled bilinearly to the shallower one's
  grid, concatenated: one D-dimensional feature per patch. The averages count the zero padding
  (``pool_zero_padding``, as the paper's code and anomalib do): a border patch's feature shrinks, and with it the
  trunk's own border artefacts, which otherwise make good images' borders the most anomalous patches (on the
  validation sets at 128 px, image AUROC grass 0.636 → 0.828, gravel 0.602 → 0.805, brick 0.930 → 0.970).
* Nearest neighbour in the bank ``B`` (M×D, the coreset): squared distances ‖x‖² − 2·x·Bᵀ + ‖B‖², the last two
  terms as a 1×1 convolution with −2·B as weights and ‖B‖² as bias, written as a matrix product over the
  patches so that the bank axis is last (in chunks of the bank; ‖x‖² is the same for every bank vector, so the
  minimum over the bank axis needs no more to find the nearest vector b). The distance
  is then computed directly as ‖x − b‖: the expansion alone loses small distances to cancellation in FP32, and
  the small distances are the ones that separate good patches from slightly odd ones.
* Anomaly map: the patch distances upsampled bilinearly to S×S and smoothed with a Gaussian (σ = 8 px at 256 px,
  scaled with the image size: 4 px at 128 px, as anomalib's; chosen on the validation sets over 4 px at 256 px).
  Image score: the map's maximum (the shared score head with ``score = max``).
* Optional re-weighting (the paper's Eq. 7, ``reweight``): the most anomalous patch x* with nearest bank vector
  m*, its distances to m* and m*'s ``reweight_neighbours − 1`` nearest bank vectors; the weight
  1 − softmax(distances)[m*] scales the whole map of that image, so the map's maximum is the re-weighted score.

The same forward pass serves training-time scoring, evaluation and the exported graph (all FP32).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from export.errors import UserError
from export.models.base import AnomalyModel
from export.nn.smoothing import GaussianSmoothing, sigma_pixels
from export.nn.trunk import Trunk

BANK_CHUNK = 4096  # bank vectors per 1×1 convolution: bounds the B×chunk×h×w distance tensor
MAX_BANK_MB = 256.0  # largest bank an export accepts


@dataclass(frozen=True)
class PatchCoreConfig:
    """What defines a PatchCore model besides its bank."""

    image_size: int = 256
    trunk: str = "efficientnet_lite0"
    levels: str = "1,2"
    sigma: float = 8.0
    score: str = "max"
    top_k: int = 1
    reweight: bool = False
    reweight_neighbours: int = 9
    pool_zero_padding: bool = True

    def to_dict(self) -> dict:
        return asdict(self)

    def level_pair(self) -> tuple[int, int]:
        """The two trunk levels (consecutive, 1…4)."""
        try:
            first, second = (int(v) for v in self.levels.split(","))
        except ValueError:
            raise UserError(f"--levels {self.levels!r}: give two trunk levels, e.g. 1,2 (strides 4 and 8)") from None
        if not 1 <= first < 4 or second != first + 1:
            raise UserError(f"--levels {self.levels}: two consecutive levels between 1 and 4, e.g. 1,2 or 2,3")
        return first, second

    def sigma_pixels(self) -> float:
        """σ of the smoothing at this image size (``sigma`` px at 256 px)."""
        return sigma_pixels(self.sigma, self.image_size)


def patch_features(trunk: Trunk, x: torch.Tensor, levels: tuple[int, int], zero_padding: bool = True) -> torch.Tensor:
    """``B×D×h×w`` locally aware patch features of the two trunk ``levels`` (h = S / stride of the first): each
    averaged over its 3×3 neighbourhood (counting the zero padding or not), the deeper upsampled to the
    shallower's grid, concatenated."""
    outputs = trunk.features(x, deepest=levels[1])
    first, second = (
        F.avg_pool2d(outputs[i], kernel_size=3, stride=1, padding=1, count_include_pad=zero_padding) for i in levels
    )
    second = F.interpolate(second, size=first.shape[-2:], mode="bilinear", align_corners=False)
    return torch.cat([first, second], dim=1)


class PatchCore(AnomalyModel):
    """PatchCore: ``anomaly_map`` is the smoothed distance of each patch to its nearest bank vector."""

    score_kind = "distance"
    export_precisions = ("fp32",)

    def __init__(
        self, config: PatchCoreConfig, trunk: Trunk, bank: torch.Tensor, bank_neighbours: torch.Tensor | None = None
    ) -> None:
        super().__init__()
        self.config = config
        self.first_level, self.second_level = config.level_pair()
        self.trunk = trunk.eval().requires_grad_(False)
        self.register_buffer("bank", bank.float().contiguous())
        if config.reweight:
            if bank_neighbours is None:
                bank_neighbours = nearest_in_bank(self.bank, config.reweight_neighbours)
            self.register_buffer("bank_neighbours", bank_neighbours.long())
        self.smoothing = GaussianSmoothing(config.sigma_pixels())
        self.fold_bank()

    def train(self, mode: bool = True) -> PatchCore:
        """The trunk stays in eval mode: PatchCore never trains it."""
        super().train(mode)
        self.trunk.eval()
        return self

    @torch.no_grad()
    def fold_bank(self) -> None:
        """The bank as 1×1 convolutions (as ``D×chunk`` matrices), in chunks: weights −2·B, bias ‖B‖²
        (non-persistent buffers)."""
        for i, chunk in enumerate(self.bank.split(BANK_CHUNK)):
            self.register_buffer(f"bank_weight{i}", (-2.0 * chunk).T.contiguous(), persistent=False)
            self.register_buffer(f"bank_bias{i}", chunk.square().sum(dim=1), persistent=False)
        self.chunks = i + 1

    def patch_features(self, x: torch.Tensor) -> torch.Tensor:
        return patch_features(self.trunk, x, (self.first_level, self.second_level), self.config.pool_zero_padding)

    def nearest(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Distance ``B×h×w`` of each patch to its nearest bank vector, and that vector's index ``B×h×w``."""
        batch, _, height, width = features.shape
        patches = features.flatten(2).transpose(1, 2)  # B×hw×D
        best, index = None, None
        for i in range(self.chunks):
            # the 1×1 convolution as a matrix product, so the bank axis is last: ONNX Runtime's ReduceMin and
            # ArgMin run about 30× faster over a contiguous axis than over the channel axis of NCHW
            squared = patches @ getattr(self, f"bank_weight{i}") + getattr(self, f"bank_bias{i}")  # B×hw×chunk
            value, where = torch.min(squared, dim=2)
            where = where + i * BANK_CHUNK
            if best is None:
                best, index = value, where
            else:
                closer = value < best
                best, index = torch.where(closer, value, best), torch.where(closer, where, index)
        distance = (patches - self.bank[index]).square().sum(dim=2).sqrt()  # B×hw
        return distance.view(batch, height, width), index.view(batch, height, width)

    def smooth(self, distances: torch.Tensor) -> torch.Tensor:
        """``B×h×w`` patch distances → ``B×1×S×S``, bilinear then Gaussian (separable, reflected borders)."""
        size = self.config.image_size
        return self.smoothing(
            F.interpolate(distances[:, None], size=(size, size), mode="bilinear", align_corners=False)
        )

    def reweighting(self, features: torch.Tensor, distances: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """The paper's image-score weight ``B``: 1 − softmax over the distances of the most anomalous patch to its
        nearest bank vector m* and m*'s nearest bank vectors, taken at m*."""
        batch, dim = features.shape[:2]
        worst = distances.flatten(1).argmax(dim=1)  # B
        patch = features.flatten(2).gather(2, worst.view(batch, 1, 1).expand(batch, dim, 1))[..., 0]  # B×D
        support = self.bank_neighbours[index.flatten(1).gather(1, worst[:, None])[:, 0]]  # B×b, m* first
        spread = (patch[:, None, :] - self.bank[support]).square().sum(dim=2).sqrt()
        return 1.0 - torch.softmax(spread, dim=1)[:, 0]

    def anomaly_map(self, x: torch.Tensor) -> torch.Tensor:
        features = self.patch_features(x)
        distances, index = self.nearest(features)
        amap = self.smooth(distances)
        if self.config.reweight:
            amap = amap * self.reweighting(features, distances, index).view(-1, 1, 1, 1)
        return amap

    def bank_megabytes(self) -> float:
        return self.bank.numel() * 4 / 2**20

    def details(self) -> dict:
        return {
            **self.trunk.details(),
            "levels": self.config.levels,
            "bank_vectors": len(self.bank),
            "feature_dim": self.bank.shape[1],
            "bank_mb": round(self.bank_megabytes(), 1),
        }

    def prepare_for_export(self, precision: str) -> PatchCore:
        """FP32 only (FP16 loses the small distance differences that make the score); a bank over 256 MB is
        refused with the fix."""
        size = self.bank_megabytes()
        if size > MAX_BANK_MB:
            vectors = int(len(self.bank) * MAX_BANK_MB / size)
            raise UserError(
                f"PatchCore's memory bank is {size:.0f} MB ({len(self.bank)} vectors × {self.bank.shape[1]}), over "
                f"the {MAX_BANK_MB:.0f} MB an exported graph may hold: train again with a smaller --coreset "
                f"(at most {vectors} vectors, i.e. the fraction × {MAX_BANK_MB / size:.2f})"
            )
        return super().prepare_for_export(precision)


@torch.no_grad()
def nearest_in_bank(bank: torch.Tensor, count: int) -> torch.Tensor:
    """``M×count`` indices of each bank vector's nearest bank vectors, itself first."""
    count = min(count, len(bank))
    squared = bank.square().sum(dim=1)
    rows = []
    for start in range(0, len(bank), BANK_CHUNK):
        chunk = bank[start : start + BANK_CHUNK]
        distance = squared[start : start + BANK_CHUNK, None] - 2.0 * chunk @ bank.T + squared[None, :]
        own = torch.arange(len(chunk))
        distance[own, own + start] = -1.0  # itself first, whatever the rounding
        rows.append(distance.topk(count, dim=1, largest=False).indices)
    return torch.cat(rows)
