"""Inference engines behind one interface, chosen by the artefact's suffix.

``.onnx`` → ONNX Runtime, ``.plan``/``.engine`` → TensorRT, ``.pt2`` → torch. Each artefact is opened only
with its sidecar, whose sha256 must match. Heavy libraries are imported when an engine is activated.
"""

from __future__ import annotations

from pathlib import Path

from edge.engines.base import Engine, EngineError, Inference, TensorSpec
from edge.sidecar import SidecarError, read_sidecar

__all__ = ["Engine", "EngineError", "Inference", "TensorSpec", "open_engine", "ENGINE_SUFFIXES"]

ENGINE_SUFFIXES = {".onnx": "onnxruntime", ".plan": "tensorrt", ".engine": "tensorrt", ".pt2": "torch"}


def open_engine(path: Path, verify: bool = True) -> Engine:
    """The engine for an artefact (not yet activated: use it as a context manager)."""
    path = Path(path)
    kind = ENGINE_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise EngineError(f"{path}: unknown artefact type {path.suffix!r}; use {', '.join(ENGINE_SUFFIXES)}")
    try:
        sidecar = read_sidecar(path, verify=verify)
    except SidecarError as exc:
        raise EngineError(str(exc)) from exc
    if kind == "onnxruntime":
        from edge.engines.onnxruntime_engine import OnnxRuntimeEngine

        return OnnxRuntimeEngine(path, sidecar)
    if kind == "tensorrt":
        from edge.engines.tensorrt_engine import TensorRTEngine

        return TensorRTEngine(path, sidecar)
    from edge.engines.torch_engine import TorchEngine

    return TorchEngine(path, sidecar)
