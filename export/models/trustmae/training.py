"""Training TrustMAE on the training folder as it is: no defect simulation, defective parts welcome.

Loss [Eq. 7]: reconstruction (MSE) + SSIM + perceptual + margin + trust region, each with weight 1 by default;
with ``--adversarial`` also the hinge GAN loss and SPADE's feature matching (weight 10) against a patch
discriminator (Adam, 4e-4). Adam at 1e-4, batch 16. The memory items change only through these gradients. After
training every training image is read once and the items no position addressed are pruned, so the checkpoint and
the exported graph hold the same, smaller memory and compute the same function.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from export.data.batches import SYMMETRIC, to_batch
from export.errors import DataError
from export.models.registry import TrainRun
from export.models.trustmae.adversarial import PatchDiscriminator, discriminator_loss, generator_losses
from export.models.trustmae.losses import IGNORE, PULL, PUSH, margin_loss, trust_loss
from export.models.trustmae.network import TrustMAE, TrustMAEConfig
from export.nn.smoothing import check_sigma
from export.nn.ssim import ssim_loss
from export.nn.trunk import build_trunk


@dataclass(frozen=True)
class TrustMAETraining:
    """How TrustMAE trains; the defaults are the CPU preset (with the config's defaults: 128 px, width 16)."""

    iterations: int = field(default=200, metadata={"help": "optimiser steps"})
    batch_size: int = 16
    learning_rate: float = 1e-4
    trust_far: float = field(
        default=1.25,
        metadata={"help": "δ2 as a multiple of each item's δ1: features farther than δ2 from every item are ignored"},
    )
    reconstruction_weight: float = 1.0
    ssim_weight: float = 1.0
    perceptual_weight: float = 1.0
    margin_weight: float = 1.0
    trust_weight: float = 1.0
    adversarial: bool = field(default=False, metadata={"help": "add the GAN and feature-matching losses"})
    adversarial_weight: float = 1.0
    feature_matching_weight: float = 10.0
    discriminator_learning_rate: float = 4e-4
    backbone_weights: str | None = field(
        default=None,
        metadata={"help": "perceptual trunk weights: imagenet, random or a file (default: imagenet where installed)"},
    )

    def check(self, config: TrustMAEConfig) -> None:
        """Refuse options that cannot work, with the fix."""
        side = 1 << config.downsamplings
        if config.image_size < 2 * side or config.image_size % side:
            raise DataError(
                f"--image-size {config.image_size}: must be a multiple of {side} (2^--downsamplings), at least "
                f"{2 * side}"
            )
        if config.width << config.downsamplings < 512:
            raise DataError(f"--width {config.width}: width·2^downsamplings must reach the latent's 512 channels")
        if not 2 <= config.memory_top_k <= config.memory_items:
            raise DataError("--memory-top-k must lie in [2, --memory-items] (the margin loss needs two items)")
        check_sigma(config.sigma, config.image_size)
        if self.batch_size < 2 or self.iterations < 1:
            raise DataError("--batch-size must be at least 2 and --iterations at least 1")
        if self.trust_far < 1.0:
            raise DataError(f"--trust-far {self.trust_far}: a multiple of δ1, at least 1 (1 turns pushing off)")


@torch.no_grad()
def count_addressed(model: TrustMAE, images: list[np.ndarray], device: torch.device, batch: int = 32) -> None:
    """Count, per memory item, the latent positions of ``images`` whose top-k holds it (eval mode)."""
    model.eval()
    model.memory.addressed.zero_()
    model.memory.counting = True
    try:
        for start in range(0, len(images), batch):
            model.memory(model.encoder(to_batch(images[start : start + batch], device, SYMMETRIC)))
    finally:
        model.memory.counting = False


def train_trustmae(run: TrainRun) -> tuple[TrustMAE, dict]:
    """Train TrustMAE; returns the model (never-addressed memory items pruned) and what the checkpoint records."""
    config, options, images, rng, device = run.config, run.training, run.images, run.rng, run.device
    options.check(config)
    trunk = build_trunk(config.trunk, options.backbone_weights)
    if trunk.weights_digest() is None:
        trunk.calibrate_batchnorm([to_batch(images[i : i + 16]) for i in range(0, min(len(images), 128), 16)])
    examples = torch.from_numpy(np.stack([images[i] for i in rng.choice(len(images), min(8, len(images)), False)]))
    model = TrustMAE(config, trunk, examples=examples).to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=options.learning_rate)
    discriminator = PatchDiscriminator().to(device) if options.adversarial else None
    if discriminator is not None:
        d_optimizer = torch.optim.Adam(discriminator.parameters(), lr=options.discriminator_learning_rate)
    history: dict[str, list[float]] = {}
    cases = torch.zeros(3)
    nearest_distances: list[float] = []  # mean d₁ per step: the latent scale δ₁ and δ₂ live on
    model.train()
    started, cpu_started = time.perf_counter(), time.process_time()
    bar = tqdm(range(options.iterations), desc="train trustmae", unit="it", disable=not run.progress)
    for _ in bar:
        x = to_batch([images[i] for i in rng.choice(len(images), size=options.batch_size)], device, SYMMETRIC)
        reconstruction, z, distances = model(x)
        trust, r, d1 = trust_loss(model.memory.distances(z.detach()), options.trust_far)
        nearest_distances.append(d1.mean().item())
        cases += torch.stack([(r == case).sum() for case in (PULL, PUSH, IGNORE)]).float().cpu()
        terms = {
            "reconstruction": F.mse_loss(reconstruction, x),
            "ssim": ssim_loss(reconstruction, x),
            "perceptual": model.perceptual(x, reconstruction).mean(),
            "margin": margin_loss(distances),
            "trust": trust,
        }
        weights = {name: getattr(options, f"{name}_weight") for name in terms}
        if discriminator is not None:
            d_loss = discriminator_loss(discriminator(x), discriminator(reconstruction.detach()))
            d_optimizer.zero_grad(set_to_none=True)
            d_loss.backward()
            d_optimizer.step()
            real, fake = discriminator(x), discriminator(reconstruction)
            terms["adversarial"], terms["feature_matching"] = generator_losses(real, fake)
            weights |= {"adversarial": options.adversarial_weight, "feature_matching": options.feature_matching_weight}
            history.setdefault("discriminator", []).append(d_loss.item())
        loss = sum(weights[name] * value for name, value in terms.items())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        for name, value in {"loss": loss, **terms}.items():
            history.setdefault(name, []).append(value.item())
        bar.set_postfix(loss=f"{np.mean(history['loss'][-20:]):.4f}")
    bar.close()
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    count_addressed(model, images, device)
    kept = model.memory.prune()
    tenth = max(1, options.iterations // 10)
    summary = {
        **trunk.details(),
        "train_images": len(images),
        "memory_items_kept": kept,
        "trust_cases": dict(zip(("pull", "push", "ignore"), (cases / cases.sum()).tolist(), strict=True)),
        "nearest_item_distance_last": round(float(np.mean(nearest_distances[-tenth:])), 2),
        "seconds_per_iteration": round(seconds / options.iterations, 3),
        "cpu_seconds_per_iteration": round(cpu_seconds / options.iterations, 3),
        "loss_first": float(np.mean(history["loss"][:tenth])),
        "loss_last": float(np.mean(history["loss"][-tenth:])),
        "terms_last": {k: float(np.mean(v[-tenth:])) for k, v in history.items()},
        "loss_curve": [float(np.mean(c)) for c in np.array_split(history["loss"], min(50, len(history["loss"])))],
    }
    return model, summary
