"""Inference engines behind one interface, chosen by the artefact's suffix or by name.

Backends register themselves by name (:mod:`edge.engines.registry`): ``.onnx`` → ONNX Runtime, ``.plan``/``.engine``
→ TensorRT, ``.pt2`` → torch; an ``.onnx`` also runs on OpenVINO when asked (``backend="openvino"``). Each artefact
is opened only with its sidecar, whose sha256 must match. Heavy libraries are imported when an engine is activated.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from edge.engines.base import Engine, EngineError, Inference, InvalidOutput, TensorSpec
from edge.engines.registry import BACKENDS, Backend, backend_names, choose_backend, register_backend
from edge.sidecar import SidecarError, read_sidecar

__all__ = [
    "BACKENDS",
    "Backend",
    "Engine",
    "EngineError",
    "Inference",
    "InvalidOutput",
    "TensorSpec",
    "backend_names",
    "open_engine",
    "register_backend",
]

#: The modules that register a backend when imported (light at import: their runtimes load at activation).
BACKEND_MODULES = (
    "edge.engines.onnxruntime_engine",
    "edge.engines.openvino_engine",
    "edge.engines.tensorrt_engine",
    "edge.engines.torch_engine",
)
for _module in BACKEND_MODULES:
    importlib.import_module(_module)


def open_engine(
    path: Path,
    verify: bool = True,
    backend: str = "auto",
    inference_precision: str | None = None,
    threads: int | None = None,
    cache_dir: Path | None = None,
) -> Engine:
    """The engine for an artefact (not yet activated: use it as a context manager). ``backend`` ``auto`` goes by
    the suffix; ``inference_precision`` (fp32, bf16), ``threads`` and ``cache_dir`` are OpenVINO's settings."""
    path = Path(path)
    settings = {"inference_precision": inference_precision, "threads": threads, "cache_dir": cache_dir}
    chosen = choose_backend(path, backend, settings)
    try:
        sidecar = read_sidecar(path, verify=verify)
    except SidecarError as exc:
        raise EngineError(str(exc)) from exc
    return chosen.make(path, sidecar, {k: v for k, v in settings.items() if v is not None})
