"""TrustMAE: memory-augmented autoencoder with trust regions, trained on the training folder as it is."""

from __future__ import annotations

import torch

from export.models.registry import ModelSpec, register
from export.models.trustmae.network import TrustMAE, TrustMAEConfig
from export.models.trustmae.training import TrustMAETraining, train_trustmae


def load_trustmae(config: TrustMAEConfig, state: dict[str, torch.Tensor]) -> TrustMAE:
    """TrustMAE from a checkpoint's config and state dict (its memory as pruned after training)."""
    model = TrustMAE(config, memory_items=state["memory.items"].shape[0], examples=state["examples"])
    model.load_state_dict(state)
    return model


SPEC = register(
    ModelSpec(
        name="trustmae",
        summary="TrustMAE (Tan et al. 2021): memory-augmented autoencoder with trust regions, tolerates defective "
        "training images",
        model=TrustMAE,
        config=TrustMAEConfig,
        training=TrustMAETraining,
        train=train_trustmae,
        load=load_trustmae,
        quick={"iterations": 2, "batch_size": 2},
    )
)
