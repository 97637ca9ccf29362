"""Turning RGB uint8 images into a model's input tensor (normalised as the model asks; ImageNet by default)."""

from __future__ import annotations

import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET = (IMAGENET_MEAN, IMAGENET_STD)
SYMMETRIC = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # [0, 1] → [−1, 1], for autoencoders with a tanh output

Normalisation = tuple[tuple[float, ...], tuple[float, ...]]


def normalise(images: torch.Tensor, normalisation: Normalisation = IMAGENET) -> torch.Tensor:
    """uint8 or [0, 255] float ``B×3×H×W`` → normalised float32 (``(x/255 − mean) / std`` per channel)."""
    mean, std = (torch.tensor(v, device=images.device).view(1, 3, 1, 1) * 255.0 for v in normalisation)
    return (images.float() - mean) / std


def to_batch(
    images: list[np.ndarray] | np.ndarray, device: torch.device | str = "cpu", normalisation: Normalisation = IMAGENET
) -> torch.Tensor:
    """RGB uint8 ``H×W×3`` images → normalised ``B×3×H×W`` float32 on ``device``."""
    array = np.ascontiguousarray(np.stack(images) if isinstance(images, list) else images)
    return normalise(torch.from_numpy(array).to(device).permute(0, 3, 1, 2), normalisation)
