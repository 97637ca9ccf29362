"""Structural similarity (Wang et al. 2004) with an 11×11 Gaussian window (σ = 1.5), as a training loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gaussian_window(size: int = 11, sigma: float = 1.5, channels: int = 3) -> torch.Tensor:
    """A normalised 2-D Gaussian kernel ``channels×1×size×size`` for a depth-wise convolution."""
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim_map(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0, window: int = 11) -> torch.Tensor:
    """Local SSIM of two ``B×C×H×W`` batches (values spanning ``data_range``), per pixel and channel."""
    channels = x.shape[1]
    kernel = gaussian_window(window, 1.5, channels).to(x.device, x.dtype)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, kernel, padding=window // 2, groups=channels)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    return ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))


def ssim_loss(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """``1 − mean SSIM``: 0 for identical batches (default range 2: images in [−1, 1])."""
    return 1.0 - ssim_map(x, y, data_range).mean()
