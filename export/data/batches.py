"""Turning RGB uint8 images into the model's input tensor (ImageNet normalisation)."""

from __future__ import annotations

import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 or [0, 255] float ``B×3×H×W`` → ImageNet-normalised float32."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1) * 255.0
    return (images.float() - mean) / std


def to_batch(images: list[np.ndarray] | np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """RGB uint8 ``H×W×3`` images → normalised ``B×3×H×W`` float32 on ``device``."""
    array = np.ascontiguousarray(np.stack(images) if isinstance(images, list) else images)
    return normalise(torch.from_numpy(array).to(device).permute(0, 3, 1, 2))
