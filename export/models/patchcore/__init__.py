"""PatchCore: a coreset memory bank of trunk patch features, nearest-neighbour distance map; no gradient steps."""

from __future__ import annotations

import torch

from export.models.patchcore.network import PatchCore, PatchCoreConfig
from export.models.patchcore.training import PatchCoreTraining, train_patchcore
from export.models.registry import ModelSpec, register
from export.nn.trunk import untrained_trunk


def load_patchcore(config: PatchCoreConfig, state: dict[str, torch.Tensor]) -> PatchCore:
    """PatchCore from a checkpoint's config and state dict (the bank is part of the state)."""
    model = PatchCore(config, untrained_trunk(config.trunk), state["bank"], state.get("bank_neighbours"))
    model.load_state_dict(state)
    return model


SPEC = register(
    ModelSpec(
        name="patchcore",
        summary="PatchCore (Roth et al. 2022): coreset bank of ImageNet patch features, nearest-neighbour distance",
        model=PatchCore,
        config=PatchCoreConfig,
        training=PatchCoreTraining,
        train=train_patchcore,
        load=load_patchcore,
        quick={"coreset": 0.05},
    )
)
