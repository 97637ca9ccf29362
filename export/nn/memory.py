"""Memory of normal appearance: per-scale features of good images and the nearest-sample lookup.

MemSeg (Yang et al.) compares the input's features with those of N memory images at three scales. Following the
paper and the authors' released inference code, the nearest memory sample is chosen **per scale** by the
smallest L1 distance sum, and the difference image DI* = |MI* − II| is concatenated with the input features.
(A popular re-implementation instead picks one memory image for all scales from summed squared differences; we
do not.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def smooth(features: list[torch.Tensor]) -> list[torch.Tensor]:
    """3×3 average pooling (stride 1, padding 1) of each scale's features, as MemSeg does before comparing."""
    return [F.avg_pool2d(f, kernel_size=3, stride=1, padding=1) for f in features]


def nearest_difference(features: torch.Tensor, bank: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each input ``B×C×H×W`` pick the bank sample (``N×C×H×W``) with the smallest L1 distance.

    Returns ``(|bank[k] − features|, k)`` with the difference ``B×C×H×W`` and indices ``B``.
    """
    with torch.no_grad():
        distances = (features.detach().unsqueeze(1) - bank.unsqueeze(0)).abs().sum(dim=(2, 3, 4))
        index = distances.argmin(dim=1)
    return (bank[index] - features).abs(), index


class MemoryBank(torch.nn.Module):
    """The memory images' smoothed features at each scale, kept as buffers (they travel with the weights)."""

    def __init__(self, channels: tuple[int, ...], size: int, samples: int) -> None:
        super().__init__()
        self.scales = len(channels)
        for i, c in enumerate(channels):
            side = size // (4 << i)
            self.register_buffer(f"scale{i}", torch.zeros(samples, c, side, side), persistent=False)

    def features(self) -> list[torch.Tensor]:
        return [getattr(self, f"scale{i}") for i in range(self.scales)]

    @torch.no_grad()
    def store(self, features: list[torch.Tensor]) -> None:
        """Replace the bank with these (already smoothed) per-scale features of the memory images."""
        for i, f in enumerate(features):
            setattr(self, f"scale{i}", f.detach().clone())

    def differences(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """DI* at every scale for smoothed input features, in FP32 whatever the features' precision (a sum of
        thousands of differences leaves FP16's range)."""
        return [nearest_difference(f.float(), m)[0] for f, m in zip(features, self.features(), strict=True)]
