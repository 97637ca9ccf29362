"""A test-only registered model whose scores are unbounded distances: a plain convolutional autoencoder whose
anomaly map is the squared reconstruction error. It proves the distance path (calibration, the line, control,
drift, rejects) before a real autoencoder does, and shows how little a model needs to join the registry."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from export.data.batches import SYMMETRIC, to_batch
from export.models import ModelSpec, TrainRun, register
from export.models.base import AnomalyModel


@dataclass(frozen=True)
class SquaredErrorConfig:
    image_size: int = 64
    width: int = 16
    top_k: int = 10
    score: str = "top_k_mean"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SquaredErrorTraining:
    iterations: int = 30
    batch_size: int = 4
    learning_rate: float = 3e-3


class SquaredErrorAutoencoder(AnomalyModel):
    """Two stride-2 convolutions down, two transposed convolutions up; map = mean over channels of (x − x̂)²."""

    score_kind = "distance"
    normalisation = SYMMETRIC

    def __init__(self, config: SquaredErrorConfig) -> None:
        super().__init__()
        self.config = config
        w = config.width
        self.encoder = nn.Sequential(
            nn.Conv2d(3, w, 4, 2, 1), nn.BatchNorm2d(w), nn.ReLU(), nn.Conv2d(w, 2 * w, 4, 2, 1), nn.ReLU()
        )
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(2 * w, w, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(w, 3, 4, 2, 1)
        )

    def anomaly_map(self, x: torch.Tensor) -> torch.Tensor:
        reconstruction = torch.tanh(self.decoder(self.encoder(x)))
        return (x - reconstruction).pow(2).mean(dim=1, keepdim=True).float()


def train_squared_error(run: TrainRun) -> tuple[SquaredErrorAutoencoder, dict]:
    model = SquaredErrorAutoencoder(run.config).to(run.device)
    optimiser = torch.optim.Adam(model.parameters(), lr=run.training.learning_rate)
    losses = []
    model.train()
    for _ in range(run.training.iterations):
        picks = run.rng.choice(len(run.images), size=run.training.batch_size)
        batch = to_batch([run.images[i] for i in picks], run.device, model.normalisation)
        loss = model.anomaly_map(batch).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    return model.eval(), {"loss_first": losses[0], "loss_last": float(np.mean(losses[-5:]))}


def load_squared_error(config: SquaredErrorConfig, state: dict) -> SquaredErrorAutoencoder:
    model = SquaredErrorAutoencoder(config)
    model.load_state_dict(state)
    return model


SPEC = register(
    ModelSpec(
        name="test-squared-error",
        summary="test only: convolutional autoencoder, squared reconstruction error (unbounded distance)",
        model=SquaredErrorAutoencoder,
        config=SquaredErrorConfig,
        training=SquaredErrorTraining,
        train=train_squared_error,
        load=load_squared_error,
        quick={},
    )
)
