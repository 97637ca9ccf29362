"""Training RB-AE in two phases [III-D] on good images and simulated defects.

Every defect is simulated by the shared Perlin-mask simulation (:class:`export.data.simulation.DefectSimulator`,
Eq. 1: ``I_ad = I_o(1 − I_m) + I_n·I_m`` with texture images or procedural textures as ``I_n``).

* Phase 1, encoder + decoder (Eq. 14): every image carries a simulated defect; the decoder reads the encoder's
  levels 3–5 directly (no repair yet); loss ``100·MSE(I_o, Î) + L_per + L_pixel_dis``. ``L_pixel_dis`` (Eq. 2) is
  the mean over the 5 levels of ``MSE(N(mean_c(Φ_l(I_o) − Φ_l(I_ad))²), I_m^l)`` with N a per-sample min–max and
  ``I_m^l`` the mask area-resized to the level: it teaches the encoder to make defects stand out.
* Reference: the medoid of the training images by their encoder features after phase 1 (per channel mean and
  standard deviation of levels 3–5, Euclidean): the image with the least summed distance to all others.
* Phase 2, encoder frozen (Eq. 17): half the batch good, half with a simulated defect; loss
  ``100·MSE(I_o, Î) + L_per + L_fea_rep + L_seg`` with ``L_fea_rep`` (Eq. 9) the MSE between the repaired levels
  3–5 and the encoder's features of the clean image, and ``L_seg`` the focal loss (γ = 4) of each of the three
  segmentation heads against the mask at its scale, summed.

``L_per`` is the mean of :class:`export.nn.perceptual.PerceptualDistance` on levels 1–3 of the shared trunk
(EfficientNet-Lite0 with its ImageNet weights by default; frozen). Adam, lr 1e-4, weight decay 1e-5. The
defaults are the CPU preset (128 px).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from export.data.batches import SYMMETRIC, to_batch
from export.data.simulation import DefectSimulator
from export.errors import DataError
from export.models.rb_ae.network import RBAE, REPAIRED_LEVELS
from export.models.registry import TrainRun
from export.nn.losses import focal_loss
from export.nn.perceptual import PerceptualDistance
from export.nn.trunk import Trunk, build_trunk

MINMAX_FLOOR = 1e-6


@dataclass(frozen=True)
class RBAETraining:
    """How RB-AE trains; the defaults are the CPU preset (docs/models.md gives the GPU preset's flags)."""

    phase1_iterations: int = field(default=600, metadata={"help": "encoder + decoder steps (Eq. 14)"})
    phase2_iterations: int = field(default=600, metadata={"help": "steps with the encoder frozen (Eq. 17)"})
    batch_size: int = field(default=4, metadata={"help": "images per step (phase 2: half simulated defects)"})
    learning_rate: float = 1e-4
    weight_decay: float = 1e-5
    reconstruction_weight: float = field(default=100.0, metadata={"help": "weight of MSE(I_o, Î)"})
    trunk: str = field(default="efficientnet_lite0", metadata={"help": "shared trunk of the perceptual loss"})
    backbone_weights: str | None = field(
        default=None,
        metadata={"help": "the trunk's weights: imagenet, random or a file (default: imagenet where installed)"},
    )
    texture_dir: Path | None = field(default=None, metadata={"help": "texture images for defect simulation"})

    def check(self, images: int) -> None:
        """Refuse options that cannot work, with the fix."""
        if self.batch_size < 2:
            raise DataError(f"--batch-size {self.batch_size}: needs at least 2 (phase 2: half simulated)")
        if self.phase1_iterations < 1 or self.phase2_iterations < 1:
            raise DataError("--phase1-iterations and --phase2-iterations must be at least 1")
        if images < 2:
            raise DataError(f"{images} good images: RB-AE needs at least 2 (one becomes the reference)")


class TrunkFeatures(nn.Module):
    """The shared trunk's levels 1–3 (strides 4, 8, 16), for the perceptual loss."""

    def __init__(self, trunk: Trunk) -> None:
        super().__init__()
        self.trunk = trunk

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.trunk.features(x, deepest=3)[1:]


def minmax(x: torch.Tensor) -> torch.Tensor:
    """Per-sample min–max normalisation of ``B×…``."""
    flat = x.flatten(1)
    low, high = flat.min(dim=1).values, flat.max(dim=1).values
    shape = (-1,) + (1,) * (x.dim() - 1)
    return (x - low.view(shape)) / (high - low).clamp_min(MINMAX_FLOOR).view(shape)


def at_scale(masks: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``B×H×W`` masks area-resized to the spatial size of ``like`` (``B×C×h×w``)."""
    return F.interpolate(masks[:, None], size=like.shape[2:], mode="area")[:, 0]


def pixel_discrimination_loss(
    clean: list[torch.Tensor], defective: list[torch.Tensor], masks: torch.Tensor
) -> torch.Tensor:
    """Eq. 2: the normalised feature difference of every level should draw the defect's mask."""
    losses = [
        F.mse_loss(minmax((a - b).pow(2).mean(dim=1)), at_scale(masks, a))
        for a, b in zip(clean, defective, strict=True)
    ]
    return sum(losses) / len(losses)


def segmentation_loss(logits: list[torch.Tensor], masks: torch.Tensor) -> torch.Tensor:
    """Focal loss (γ = 4) of each scale's logits against the mask at that scale, summed."""
    return sum(focal_loss(scale, at_scale(masks, scale)) for scale in logits)


@torch.no_grad()
def choose_reference(model: RBAE, images: list[np.ndarray], batch_size: int = 16) -> int:
    """Index of the medoid of ``images`` by the per channel mean and standard deviation of their encoder
    features at levels 3–5."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    descriptors = []
    for start in range(0, len(images), batch_size):
        features = model.encoder(to_batch(images[start : start + batch_size], device, SYMMETRIC))
        levels = [features[i].flatten(2) for i in REPAIRED_LEVELS]
        descriptors.append(torch.cat([s for f in levels for s in (f.mean(dim=2), f.std(dim=2))], dim=1))
    model.train(was_training)
    descriptors = torch.cat(descriptors)
    return int(torch.cdist(descriptors, descriptors).sum(dim=1).argmin())


def _batch(
    images: list[np.ndarray], picks: np.ndarray, simulated: int, simulator: DefectSimulator, run: TrainRun
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(inputs, clean images, masks): the last ``simulated`` of ``picks`` carry a simulated defect."""
    inputs, clean, masks = [], [], []
    for j, i in enumerate(picks):
        image = images[i]
        if j >= len(picks) - simulated:
            augmented, mask = simulator(image, run.rng)
        else:
            augmented, mask = image, np.zeros(image.shape[:2], np.float32)
        inputs.append(augmented)
        clean.append(image)
        masks.append(mask)
    device = run.device
    return (
        to_batch(inputs, device, SYMMETRIC),
        to_batch(clean, device, SYMMETRIC),
        torch.from_numpy(np.stack(masks)).to(device),
    )


def _optimiser(parameters: list[nn.Parameter], options: RBAETraining) -> torch.optim.Optimizer:
    return torch.optim.Adam(parameters, lr=options.learning_rate, weight_decay=options.weight_decay)


def train_rb_ae(run: TrainRun) -> tuple[RBAE, dict]:
    """Train RB-AE in two phases; returns the model (reference chosen, banks refreshed) and a summary."""
    config, options, images, rng = run.config, run.training, run.images, run.rng
    options.check(len(images))
    try:
        simulator = DefectSimulator(options.texture_dir)
    except ValueError as exc:
        raise DataError(f"--texture-dir: {exc}") from exc
    model = RBAE(config).to(run.device).train()
    trunk = build_trunk(options.trunk, options.backbone_weights)
    perceptual = PerceptualDistance(TrunkFeatures(trunk), SYMMETRIC)
    perceptual = perceptual.to(run.device).eval().requires_grad_(False)
    weight = options.reconstruction_weight
    summary: dict = {"train_images": len(images)}

    def reconstruction_loss(reconstruction: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        return weight * F.mse_loss(reconstruction, clean) + perceptual(reconstruction, clean).mean()

    def run_phase(name: str, iterations: int, simulated: int, parameters: list, step) -> None:
        optimiser = _optimiser(parameters, options)
        losses: list[float] = []
        started = time.perf_counter()
        bar = tqdm(range(iterations), desc=f"train rb-ae {name}", unit="it", disable=not run.progress)
        for _ in bar:
            picks = rng.integers(len(images), size=options.batch_size)
            inputs, clean, masks = _batch(images, picks, simulated, simulator, run)
            loss = step(inputs, clean, masks)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        bar.close()
        tenth = max(1, len(losses) // 10)
        summary[name] = {
            "loss_first": float(np.mean(losses[:tenth])),
            "loss_last": float(np.mean(losses[-tenth:])),
            "loss_curve": [float(np.mean(c)) for c in np.array_split(losses, min(50, len(losses)))],
            "seconds": round(time.perf_counter() - started, 1),
        }

    def phase1_step(inputs: torch.Tensor, clean: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        defective, original = model.encoder(inputs), model.encoder(clean)
        reconstruction = model.decoder(*(defective[i] for i in REPAIRED_LEVELS))
        return reconstruction_loss(reconstruction, clean) + pixel_discrimination_loss(original, defective, masks)

    def phase2_step(inputs: torch.Tensor, clean: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        out = model(inputs)
        with torch.no_grad():
            target = model.encoder(clean)
        repair = sum(F.mse_loss(r, target[i]) for r, i in zip(out.repaired, REPAIRED_LEVELS, strict=True))
        return (
            reconstruction_loss(out.reconstruction, clean)
            + repair / len(REPAIRED_LEVELS)
            + segmentation_loss(out.logits, masks)
        )

    phase1_parameters = [*model.encoder.parameters(), *model.decoder.parameters()]
    run_phase("phase1", options.phase1_iterations, options.batch_size, phase1_parameters, phase1_step)
    reference = choose_reference(model, images)
    model.freeze_encoder()
    model.set_reference(images[reference])
    phase2_parameters = [p for p in model.parameters() if p.requires_grad]
    run_phase("phase2", options.phase2_iterations, options.batch_size // 2, phase2_parameters, phase2_step)
    model.eval()
    summary["reference_index"] = reference
    summary["perceptual_trunk"] = trunk.details()
    return model, summary
