"""Checkpoints: the model's weights, its config, its memory images and how it was trained, in one file.

Saved with ``torch.save`` and read with ``weights_only=True``: nothing in a checkpoint is unpickled as code.
The memory images travel inside the state dict, so the memory bank is rebuilt from them with the final weights.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from export.nn.trunk import untrained_trunk
from export.errors import CheckpointError
from export.models.memseg.network import MemSeg, MemSegConfig

FORMAT = "edge-inspect-checkpoint"
FORMAT_VERSION = 1
MODELS = ("memseg",)


def save_checkpoint(path: Path, model: MemSeg, training: dict, metrics: dict | None = None) -> None:
    """Write atomically (temporary file, then rename): a crash never leaves half a checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": "memseg",
        "config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "training": training,
        "metrics": metrics or {},
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def read_checkpoint(path: Path) -> dict:
    """The checkpoint's contents, validated; a clear :class:`CheckpointError` for anything else."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, pickle error, …: torch raises many types
        raise CheckpointError(
            f"cannot read checkpoint {path}: {exc.__class__.__name__}: {str(exc)[:200]}. "
            "The file is damaged or not a checkpoint made by edge-train; train again or copy it again"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a checkpoint made by edge-train")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {payload.get('format_version')}, this version reads "
            f"{FORMAT_VERSION}: use the edge-inspect version that wrote it"
        )
    if payload.get("model") not in MODELS:
        raise CheckpointError(f"{path} holds model {payload.get('model')!r}; supported: {', '.join(MODELS)}")
    return payload


def load_model(path: Path, device: torch.device | str = "cpu") -> tuple[MemSeg, dict]:
    """The model in eval mode on ``device`` with its memory rebuilt, and the checkpoint's contents."""
    payload = read_checkpoint(path)
    try:
        config = MemSegConfig(**payload["config"])
        state = payload["state_dict"]
        model = MemSeg(config, untrained_trunk(), state["memory_images"])
        model.load_state_dict(state)
    except (KeyError, TypeError, RuntimeError) as exc:
        raise CheckpointError(f"{path} does not match the MemSeg model: {str(exc)[:300]}") from exc
    model.to(device).eval()
    model.refresh_memory()
    return model, payload
