"""Gaussian smoothing of an anomaly map: separable, truncated at 4σ, reflected borders, in FP32 (a fixed
depth-wise convolution pair in the exported graph)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """1-D Gaussian, truncated at 4σ, summing to 1."""
    radius = max(1, math.ceil(4.0 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


class GaussianSmoothing(nn.Module):
    """``B×1×H×W`` → the same, smoothed with a Gaussian of ``sigma`` pixels (``sigma = 0``: unchanged)."""

    def __init__(self, sigma: float) -> None:
        super().__init__()
        if sigma < 0:
            raise ValueError(f"smoothing sigma {sigma} must be ≥ 0")
        self.sigma = sigma
        self.register_buffer("kernel", gaussian_kernel(sigma) if sigma > 0 else torch.ones(1), persistent=False)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        if self.sigma == 0:
            return maps
        maps, kernel = maps.float(), self.kernel
        radius = (len(kernel) - 1) // 2
        maps = F.conv2d(F.pad(maps, (radius, radius, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1))
        return F.conv2d(F.pad(maps, (0, 0, radius, radius), mode="reflect"), kernel.view(1, 1, -1, 1))
