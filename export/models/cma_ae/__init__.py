"""CMA-AE: patch-wise autoencoder with a sparse memory of normal codes, gated feature repair and multi-scale
feature residuals (distance map)."""

from __future__ import annotations

import torch

from export.models.cma_ae.network import CMAAE, CMAAEConfig
from export.models.cma_ae.training import CMAAETraining, train_cma_ae
from export.models.registry import ModelSpec, register


def load_cma_ae(config: CMAAEConfig, state: dict[str, torch.Tensor]) -> CMAAE:
    """CMA-AE from a checkpoint's config and state dict (one written before examples were kept has none: it
    exports in FP32 only)."""
    model = CMAAE(config, examples=state.get("examples"))
    model.load_state_dict({"examples": model.examples, **state})
    return model


SPEC = register(
    ModelSpec(
        name="cma-ae",
        summary="CMA-AE (Luo et al.): 64×64 patch autoencoder, sparse memory, gated repair, multi-scale residual map",
        model=CMAAE,
        config=CMAAEConfig,
        training=CMAAETraining,
        train=train_cma_ae,
        load=load_cma_ae,
        quick={"memory_size": 50, "stage1_iterations": 2, "stage2_iterations": 2, "batch_size": 4},
    )
)
