"""Gaussian smoothing of an anomaly map: separable, truncated at 4σ, reflected borders, in FP32 (a fixed
depth-wise convolution pair in the exported graph). Models give σ in pixels at 256 px; it scales with the image."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from export.errors import DataError


def kernel_radius(sigma: float) -> int:
    """Half-width of the truncated kernel for ``sigma`` pixels."""
    return max(1, math.ceil(4.0 * sigma))


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """1-D Gaussian, truncated at 4σ, summing to 1."""
    radius = kernel_radius(sigma)
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def sigma_pixels(sigma: float, image_size: int) -> float:
    """σ in pixels at ``image_size`` for a σ given in pixels at 256 px."""
    return sigma * image_size / 256.0


def check_sigma(sigma: float, image_size: int) -> None:
    """Refuse, with the fix, a ``--sigma`` (px at 256 px) that is negative or reaches past the map's border."""
    pixels = sigma_pixels(sigma, image_size)
    if sigma < 0 or (pixels > 0 and kernel_radius(pixels) >= image_size):
        largest = (image_size - 1) / 4.0 * 256.0 / image_size
        raise DataError(
            f"--sigma {sigma}: the map's smoothing in px at 256 px must be 0 (none) or positive with its 4σ "
            f"inside the {image_size} px map: at most {largest:.1f}"
        )


class GaussianSmoothing(nn.Module):
    """``B×1×H×W`` → the same, smoothed with a Gaussian of ``sigma`` pixels (``sigma = 0``: unchanged)."""

    def __init__(self, sigma: float) -> None:
        super().__init__()
        if sigma < 0:
            raise ValueError(f"smoothing sigma {sigma} must be ≥ 0")
        self.sigma = sigma
        if sigma > 0:
            self.register_buffer("kernel", gaussian_kernel(sigma), persistent=False)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        if self.sigma == 0:
            return maps
        maps, kernel = maps.float(), self.kernel.float()
        radius = (len(kernel) - 1) // 2
        maps = F.conv2d(F.pad(maps, (radius, radius, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1))
        return F.conv2d(F.pad(maps, (0, 0, radius, radius), mode="reflect"), kernel.view(1, 1, -1, 1))
