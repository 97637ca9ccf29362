"""Layers the models share: conv-BN-ReLU blocks, coordinate attention, upsampling."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvBNReLU(nn.Sequential):
    """3×3 convolution, BatchNorm, ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    """Bilinear ×2 upsampling."""
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


class CoordinateAttention(nn.Module):
    """Coordinate attention (Hou et al., CVPR 2021): per-row and per-column weights in (0, 1).

    ``forward`` returns the two weight maps ``B×C×H×1`` and ``B×C×1×W``; the caller multiplies them into the
    features it wants weighted.
    """

    def __init__(self, channels: int, reduction: int = 32) -> None:
        super().__init__()
        hidden = max(8, channels // reduction)
        self.squeeze = nn.Sequential(nn.Conv2d(channels, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.Hardswish())
        self.rows = nn.Conv2d(hidden, channels, 1)
        self.cols = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        height = x.shape[2]
        pooled_rows = x.mean(dim=3, keepdim=True)  # B×C×H×1
        pooled_cols = x.mean(dim=2, keepdim=True).transpose(2, 3)  # B×C×W×1
        y = self.squeeze(torch.cat([pooled_rows, pooled_cols], dim=2))
        y_rows, y_cols = y[:, :, :height], y[:, :, height:]
        return torch.sigmoid(self.rows(y_rows)), torch.sigmoid(self.cols(y_cols)).transpose(2, 3)
