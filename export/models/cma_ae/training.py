"""Training CMA-AE in two stages on random 64×64 patches of the good images.

* Stage 1 (Eq. 5, 11): good patches; the decoder reads the memory's ``ẑ`` (feature repair bypassed); loss
  ``50·L1(x̂, x) + 0.01·entropy(ŵ)``. Encoder, memory and decoder train.
* Stage 2 (Eq. 13): the memory is frozen; encoder, feature repair and decoder train on a batch that is half good
  patches and half patches with a simulated defect, the target being the **clean** patch (the paper's Eq. 12
  targets the defective one, which would teach the model to reproduce defects); same loss. The defects come from
  the shared Perlin-mask simulation (:class:`export.data.simulation.DefectSimulator`, MemSeg's recipe), applied to
  the patch; the paper's GAAGA pastes are not reproduced.

Adam with lr 2e-4 and β1 = 0.5, as the paper. The defaults are the CPU preset.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from export.data.batches import SYMMETRIC, to_batch
from export.data.simulation import DefectSimulator
from export.errors import DataError
from export.models.cma_ae.network import CMAAE, PATCH
from export.models.registry import TrainRun
from export.nn.sparse_memory import addressing_entropy


@dataclass(frozen=True)
class CMAAETraining:
    """How CMA-AE trains; the defaults are the CPU preset (docs/models.md gives the GPU preset's flags)."""

    stage1_iterations: int = field(default=1000, metadata={"help": "steps on good patches, repair bypassed"})
    stage2_iterations: int = field(default=1000, metadata={"help": "steps with simulated defects, memory frozen"})
    batch_size: int = field(default=16, metadata={"help": "64×64 patches per step (stage 2: half simulated)"})
    learning_rate: float = 2e-4
    beta1: float = field(default=0.5, metadata={"help": "Adam β1"})
    l1_weight: float = 50.0
    entropy_weight: float = 0.01
    texture_dir: Path | None = field(default=None, metadata={"help": "texture images for defect simulation"})

    def check(self) -> None:
        """Refuse options that cannot work, with the fix."""
        if self.batch_size < 2:
            raise DataError(f"--batch-size {self.batch_size}: needs at least 2 (stage 2: half simulated)")
        if self.stage1_iterations < 1 or self.stage2_iterations < 0:
            raise DataError("--stage1-iterations must be at least 1, --stage2-iterations at least 0")


def random_patches(images: list[np.ndarray], count: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``count`` random 64×64 crops (uint8 RGB) of random images."""
    patches = []
    for i in rng.integers(len(images), size=count):
        image = images[i]
        y, x = (int(rng.integers(side - PATCH + 1)) for side in image.shape[:2])
        patches.append(image[y : y + PATCH, x : x + PATCH])
    return patches


def reconstruction_loss(
    model: CMAAE, inputs: torch.Tensor, targets: torch.Tensor, options: CMAAETraining, repair: bool
) -> torch.Tensor:
    """``l1_weight·L1(reconstruction, target) + entropy_weight·entropy(ŵ)``."""
    reconstruction, _, weights = model.reconstruct(inputs, repair=repair)
    l1 = (reconstruction - targets).abs().mean()
    return options.l1_weight * l1 + options.entropy_weight * addressing_entropy(weights)


def train_cma_ae(run: TrainRun) -> tuple[CMAAE, dict]:
    """Train CMA-AE in two stages; returns the model and what the checkpoint should record."""
    config, options, images, rng, device = run.config, run.training, run.images, run.rng, run.device
    options.check()
    try:
        simulator = DefectSimulator(options.texture_dir)
    except ValueError as exc:
        raise DataError(f"--texture-dir: {exc}") from exc
    spread = np.linspace(0, len(images) - 1, min(8, len(images))).astype(int)  # no draw from rng: same training
    examples = torch.from_numpy(np.stack([images[i] for i in spread]))
    model = CMAAE(config, examples=examples).to(device).train()
    batch = lambda patches: to_batch(patches, device, SYMMETRIC)  # noqa: E731
    losses: dict[str, list[float]] = {"stage1": [], "stage2": []}

    def steps(stage: str, count: int, parameters: list[torch.nn.Parameter], make_step) -> None:
        optimizer = torch.optim.Adam(parameters, lr=options.learning_rate, betas=(options.beta1, 0.999))
        bar = tqdm(range(count), desc=f"train cma-ae {stage}", unit="it", disable=not run.progress)
        for _ in bar:
            loss = make_step()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses[stage].append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[stage][-20:]):.4f}")
        bar.close()

    def stage1_step() -> torch.Tensor:
        x = batch(random_patches(images, options.batch_size, rng))
        return reconstruction_loss(model, x, x, options, repair=False)

    def stage2_step() -> torch.Tensor:
        clean = random_patches(images, options.batch_size, rng)
        n_good = options.batch_size // 2
        damaged = clean[:n_good] + [simulator(p, rng)[0] for p in clean[n_good:]]
        return reconstruction_loss(model, batch(damaged), batch(clean), options, repair=True)

    stage1 = [p for name, p in model.named_parameters() if not name.startswith("repair.")]
    steps("stage1", options.stage1_iterations, stage1, stage1_step)
    model.memory.fold()
    stage2 = [p for p in model.parameters() if p.requires_grad]
    steps("stage2", options.stage2_iterations, stage2, stage2_step)
    model.eval()

    def curve(values: list[float]) -> list[float]:
        return [float(np.mean(c)) for c in np.array_split(values, min(50, len(values)))] if values else []

    summary: dict = {"train_images": len(images), "patches_per_step": options.batch_size}
    for stage, values in losses.items():
        if values:
            tenth = max(1, len(values) // 10)
            summary[f"{stage}_loss_first"] = float(np.mean(values[:tenth]))
            summary[f"{stage}_loss_last"] = float(np.mean(values[-tenth:]))
    summary["loss_curve"] = {stage: curve(values) for stage, values in losses.items()}
    return model, summary
