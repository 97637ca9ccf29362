"""RB-AE: an autoencoder repairing its features by attention to one reference image, multi-scale segmentation of
input/reconstruction feature differences (probability map)."""

from __future__ import annotations

import torch

from export.models.rb_ae.network import RBAE, RBAEConfig
from export.models.rb_ae.training import RBAETraining, train_rb_ae
from export.models.registry import ModelSpec, register


def load_rb_ae(config: RBAEConfig, state: dict[str, torch.Tensor]) -> RBAE:
    """RB-AE from a checkpoint's config and state dict, the reference's patch banks recomputed."""
    model = RBAE(config)
    model.load_state_dict(state)
    model.freeze_encoder()
    model.refresh_reference()
    return model


SPEC = register(
    ModelSpec(
        name="rb-ae",
        summary="RB-AE (Luo et al.): autoencoder repairing features by attention to a reference image, "
        "multi-scale segmentation of feature differences",
        model=RBAE,
        config=RBAEConfig,
        training=RBAETraining,
        train=train_rb_ae,
        load=load_rb_ae,
        quick={"width": 8, "phase1_iterations": 2, "phase2_iterations": 2, "batch_size": 2},
    )
)
