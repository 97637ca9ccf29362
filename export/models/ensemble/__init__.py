"""Ensemble: several registered models' maps, each divided by its spread on good images, averaged."""

from __future__ import annotations

import torch

from export.models.ensemble.network import Ensemble, EnsembleConfig
from export.models.ensemble.training import EnsembleTraining, train_ensemble
from export.models.registry import ModelSpec, get_spec, register


def load_ensemble(config: EnsembleConfig, state: dict[str, torch.Tensor]) -> Ensemble:
    """The ensemble from a checkpoint's config and state dict: each member reloaded by its own model's loader
    from its config and its share of the state dict."""
    members = []
    for index, entry in enumerate(config.member_configs):
        spec = get_spec(entry["model"])
        prefix = f"members.{index}."
        own = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        members.append(spec.load(spec.config(**entry["config"]), own))
    return Ensemble(config, members, state["spreads"])


SPEC = register(
    ModelSpec(
        name="ensemble",
        summary="several registered models (default TrustMAE, RB-AE's difference map and CMA-AE), each map divided "
        "by its spread on good images, averaged",
        model=Ensemble,
        config=EnsembleConfig,
        training=EnsembleTraining,
        train=train_ensemble,
        load=load_ensemble,
        quick={
            "members": "trustmae:iterations=2:batch_size=2,"
            "rb-ae:map=difference:width=8:phase1_iterations=2:phase2_iterations=2:batch_size=2,"
            "cma-ae:memory_size=50:stage1_iterations=2:stage2_iterations=2:batch_size=4",
            "spread_images": 4,
        },
    )
)
