"""MemSeg: memory of good images, difference features, multi-scale fusion and a U-Net decoder (probability map)."""

from __future__ import annotations

import torch

from export.models.memseg.network import MemSeg, MemSegConfig
from export.models.memseg.training import MemSegTraining, train_memseg
from export.models.registry import ModelSpec, register
from export.nn.trunk import untrained_trunk


def load_memseg(config: MemSegConfig, state: dict[str, torch.Tensor]) -> MemSeg:
    """MemSeg from a checkpoint's config and state dict, its memory bank rebuilt from the memory images."""
    model = MemSeg(config, untrained_trunk(config.trunk), state["memory_images"])
    model.load_state_dict(state)
    model.refresh_memory()
    return model


SPEC = register(
    ModelSpec(
        name="memseg",
        summary="MemSeg (Yang et al. 2023): memory of good images, simulated defects, segmentation decoder",
        model=MemSeg,
        config=MemSegConfig,
        training=MemSegTraining,
        train=train_memseg,
        load=load_memseg,
        quick={"image_size": 64, "memory_samples": 3, "iterations": 10, "batch_size": 4},
    )
)
