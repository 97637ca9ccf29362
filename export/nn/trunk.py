"""The ResNet18 trunk the memory-based models share: stem and layer1…layer4 outputs, and weight loading."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch
from torch import nn
from torchvision.models import resnet18

from export.errors import CheckpointError

log = logging.getLogger(__name__)

RANDOM_INIT_WARNING = (
    "no --backbone-weights given: ResNet18 starts from random initialisation. Memory-based models are much "
    "weaker without ImageNet features; pass torchvision's ResNet18 state dict (resnet18-f37072fd.pth) with "
    "--backbone-weights PATH when you have it."
)


def load_resnet18(weights: Path | None) -> nn.Module:
    """A torchvision ResNet18 with the given state dict, or random weights and a warning."""
    model = resnet18(weights=None)
    if weights is None:
        warnings.warn(RANDOM_INIT_WARNING, stacklevel=2)
        log.warning(RANDOM_INIT_WARNING)
        return model
    path = Path(weights)
    if not path.is_file():
        raise CheckpointError(f"backbone weights not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise CheckpointError(
            f"cannot read backbone weights {path}: {exc}. Expected a torchvision ResNet18 state dict (.pth)"
        ) from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a state dict: expected torchvision's ResNet18 weights")
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("fc.")]
    if missing or result.unexpected_keys:
        raise CheckpointError(
            f"{path} does not hold ResNet18 weights: missing {missing[:3]}, unexpected "
            f"{list(result.unexpected_keys)[:3]}. Expected torchvision's resnet18 state dict"
        )
    return model


def untrained_trunk() -> Trunk:
    """A ResNet18 trunk with freshly initialised weights, for loading a checkpoint's state into."""
    return Trunk(resnet18(weights=None))


class Trunk(nn.Module):
    """ResNet18 without its head; ``forward`` returns the stem (½ size) and layer1…layer4 (¼ … 1/32) outputs."""

    def __init__(self, resnet: nn.Module) -> None:
        super().__init__()
        self.stem = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu)
        self.pool = resnet.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            resnet.layer1,
            resnet.layer2,
            resnet.layer3,
            resnet.layer4,
        )

    def shallow(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Stem output and the layer1…layer3 features (the memory's scales)."""
        stem = self.stem(x)
        f1 = self.layer1(self.pool(stem))
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        return stem, [f1, f2, f3]

    @torch.no_grad()
    def calibrate_batchnorm(self, batches: list[torch.Tensor]) -> None:
        """Set the BatchNorm statistics of conv1…layer3 to those of these (normalised) image batches.

        For a randomly initialised trunk: its BatchNorm layers start as identities, so activations grow layer by
        layer; with the data's own statistics every layer sees normalised features.
        """
        norms = [m for part in self.frozen_modules() for m in part.modules() if isinstance(m, nn.BatchNorm2d)]
        for bn in norms:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average over all batches
            bn.train()
        for batch in batches:
            self.shallow(batch)
        for bn in norms:
            bn.eval()

    def frozen_modules(self) -> list[nn.Module]:
        """conv1…layer3: frozen in MemSeg, layer4 trains."""
        return [self.stem, self.layer1, self.layer2, self.layer3]
