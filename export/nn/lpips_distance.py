"""An LPIPS-style perceptual distance map (Zhang et al. 2018) on a frozen image trunk.

Both images go through the trunk as one batch; at each of its levels the features are unit-normalised along the
channels (in FP32), their squared difference is summed over the channels, and the maps, resized to the image,
are averaged with equal weights. LPIPS proper also weighs every channel with weights learnt on human judgements
(BAPPS); without those weights every channel counts the same. (:mod:`export.nn.perceptual` is the plain
feature-difference distance, without the normalisation.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from export.data.batches import IMAGENET, Normalisation
from export.nn.renormalise import Renormalise

EPS = 1e-10


def unit_normalise(features: torch.Tensor) -> torch.Tensor:
    """Each position's channel vector divided by its Euclidean norm, in FP32."""
    features = features.float()
    return features / (features.pow(2).sum(dim=1, keepdim=True) + EPS).sqrt()


class LpipsDistance(nn.Module):
    """``forward(x, y) → B×1×H×W``: the per-pixel LPIPS-style distance of two image batches (each level's term
    lies in [0, 4], so the map does too).

    ``extractor`` maps a batch normalised as ``trunk_normalisation`` to a list of feature maps; the images come
    normalised as ``normalisation`` and are converted on the way in (FP32), then cast to ``dtype``, the extractor's
    precision (FP16 only where an export says so).
    """

    def __init__(
        self, extractor: nn.Module, normalisation: Normalisation, trunk_normalisation: Normalisation = IMAGENET
    ) -> None:
        super().__init__()
        self.extractor = extractor
        self.renormalise = Renormalise(normalisation, trunk_normalisation)
        self.dtype = torch.float32

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        features = self.extractor(self.renormalise(torch.cat([x, y])).to(self.dtype))
        total = torch.zeros_like(x[:, :1], dtype=torch.float32)
        for f in features:
            f = unit_normalise(f)
            difference = (f[:batch] - f[batch:]).pow(2).sum(dim=1, keepdim=True)
            total = total + F.interpolate(difference, size=x.shape[2:], mode="bilinear", align_corners=False)
        return total / len(features)
