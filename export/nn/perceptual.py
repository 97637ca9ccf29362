"""Perceptual distance (Johnson et al. 2016) between two image batches on a frozen feature extractor, per pixel.

``PerceptualDistance(x, y)`` is ``mean_l up(mean_c((Φ_l(x) − Φ_l(y))²))``: for each of the extractor's feature
maps the squared difference averaged over channels, upsampled bilinearly to the input size, averaged over the maps.
Its mean over the pixels is the perceptual loss. The images come normalised as ``normalisation`` says and are
re-normalised the ImageNet way the shared trunk expects.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from export.data.batches import Normalisation
from export.nn.renormalise import Renormalise


class PerceptualDistance(nn.Module):
    """``forward(x, y) → B×1×H×W`` FP32; ``extractor(images)`` returns a list of ``B×C_l×H_l×W_l`` features."""

    def __init__(self, extractor: nn.Module, normalisation: Normalisation) -> None:
        super().__init__()
        self.extractor = extractor
        self.renormalise = Renormalise(normalisation)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        a, b = (self.extractor(self.renormalise(t)) for t in (x, y))
        maps = [
            F.interpolate((f.float() - g.float()).pow(2).mean(dim=1, keepdim=True), size=size, mode="bilinear")
            for f, g in zip(a, b, strict=True)
        ]
        return sum(maps) / len(maps)
