"""The optional adversarial terms of TrustMAE's loss: a patch discriminator with the hinge loss and the
feature-matching loss of SPADE (Park et al. 2019). Training only; nothing of it is exported."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


class PatchDiscriminator(nn.Module):
    """4×4 stride-2 spectrally normalised convolutions 3 → 64 → 128 → 256, then a 1-channel patch score map;
    ``forward`` returns every intermediate feature map and the score map last."""

    def __init__(self, widths: tuple[int, ...] = (64, 128, 256)) -> None:
        super().__init__()
        channels = (3, *widths)
        self.blocks = nn.ModuleList(
            nn.Sequential(spectral_norm(nn.Conv2d(a, b, 4, 2, 1)), nn.LeakyReLU(0.2, inplace=True))
            for a, b in zip(channels, channels[1:], strict=False)
        )
        self.head = spectral_norm(nn.Conv2d(widths[-1], 1, 3, padding=1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for block in self.blocks:
            x = block(x)
            features.append(x)
        return [*features, self.head(x)]


def discriminator_loss(real: list[torch.Tensor], fake: list[torch.Tensor]) -> torch.Tensor:
    """Hinge loss of the discriminator on real and (detached) reconstructed images."""
    return F.relu(1.0 - real[-1]).mean() + F.relu(1.0 + fake[-1]).mean()


def generator_losses(real: list[torch.Tensor], fake: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The autoencoder's hinge adversarial loss and the L1 feature-matching loss against the real images'
    (detached) discriminator features."""
    adversarial = -fake[-1].mean()
    matching = sum(F.l1_loss(f, r.detach()) for f, r in zip(fake[:-1], real[:-1], strict=True)) / (len(fake) - 1)
    return adversarial, matching
