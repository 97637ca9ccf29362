"""The shared frame preprocessing folded into every exported graph: uint8 camera frames → normalised input.

The uint8 frame is cast first (TensorRT lets a UINT8 tensor feed only a Cast), cropped to the ROI, grey
replicated to three channels or BGR reordered, resized with antialiasing (integer-factor area pooling, then
bilinear for the remainder, as the training images are resized) and normalised as the model asks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edge.sidecar import FrameSpec
from export.data.batches import IMAGENET, Normalisation


class FramePreprocess(nn.Module):
    """uint8 camera frames (``B×H×W`` or ``B×H×W×3``) → normalised ``B×3×S×S`` float32."""

    def __init__(self, frame: FrameSpec, size: int, normalisation: Normalisation = IMAGENET) -> None:
        super().__init__()
        self.frame, self.size = frame, size
        _, _, w, h = frame.region
        self.pool = (max(1, h // size), max(1, w // size))
        mean, std = (torch.tensor(v).view(1, 3, 1, 1) * 255.0 for v in normalisation)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("inv_std", 1.0 / std, persistent=False)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x0, y0, w, h = self.frame.region
        x = frames.to(torch.float32)  # first op on the uint8 input: a Cast
        x = x[:, y0 : y0 + h, x0 : x0 + w]
        if self.frame.channels == 1:
            x = x.unsqueeze(1).expand(-1, 3, -1, -1)
        else:
            x = x.permute(0, 3, 1, 2)
            if self.frame.pixel_format == "bgr8":
                x = torch.cat([x[:, 2:3], x[:, 1:2], x[:, 0:1]], dim=1)
        if self.pool != (1, 1):
            x = F.avg_pool2d(x, kernel_size=self.pool, stride=self.pool)
        if tuple(x.shape[2:]) != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return (x - self.mean) * self.inv_std


def map_factor(frame: FrameSpec, size: int) -> int:
    """How much the anomaly map is averaged down on its way out: the largest whole factor of the model's ``size``
    that leaves the map at least as large as the frame's ROI (1 where the model works at the frame's size or
    below). A model working above the frame's size (its input upsampled) has no more detail than the frame."""
    _, _, w, h = frame.region
    return max((k for k in range(1, size + 1) if size % k == 0 and size // k >= max(w, h)), default=1)


class MapToFrame(nn.Module):
    """``B×1×S×S`` → ``B×1×(S/k)×(S/k)``, the mean over each k×k block (:func:`map_factor`)."""

    def __init__(self, frame: FrameSpec, size: int) -> None:
        super().__init__()
        self.factor = map_factor(frame, size)

    def forward(self, anomaly_map: torch.Tensor) -> torch.Tensor:
        if self.factor == 1:
            return anomaly_map
        return F.avg_pool2d(anomaly_map, kernel_size=self.factor, stride=self.factor)
