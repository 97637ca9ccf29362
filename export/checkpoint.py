"""Checkpoints: which model, its config, its weights (and whatever buffers it keeps, such as memory images) and
how it was trained, in one file.

Saved with ``torch.save`` and read with ``weights_only=True``: nothing in a checkpoint is unpickled as code.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from export.errors import CheckpointError
from export.models import get_spec
from export.models.base import AnomalyModel

FORMAT = "edge-inspect-checkpoint"
FORMAT_VERSION = 1


def save_checkpoint(path: Path, name: str, model: AnomalyModel, training: dict, metrics: dict | None = None) -> None:
    """Write atomically (temporary file, then rename): a crash never leaves half a checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": name,
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
    except Exception as exc:  # truncated zip, pickle refused by the safe loader, …: torch raises many types
        raise CheckpointError(
            f"cannot read checkpoint {path}: the file is damaged or not a checkpoint made by edge-train "
            f"({type(exc).__name__}); copy it again, or train again with edge-train"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a checkpoint made by edge-train")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {payload.get('format_version')}, this version reads "
            f"{FORMAT_VERSION}: use the edge-inspect version that wrote it"
        )
    try:
        get_spec(str(payload.get("model")))
    except Exception as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    return payload


def load_model(path: Path, device: torch.device | str = "cpu") -> tuple[AnomalyModel, dict]:
    """The model in eval mode on ``device``, and the checkpoint's contents."""
    payload = read_checkpoint(path)
    spec = get_spec(payload["model"])
    try:
        model = spec.load(spec.config(**payload["config"]), payload["state_dict"])
    except (KeyError, TypeError, RuntimeError) as exc:
        raise CheckpointError(f"{path} does not match the {spec.name} model: {str(exc)[:300]}") from exc
    return model.to(device).eval(), payload
