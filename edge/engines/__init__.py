"""Inference engines behind one interface, chosen by the artefact's suffix or by name.

``.onnx`` → ONNX Runtime, ``.plan``/``.engine`` → TensorRT, ``.pt2`` → torch; an ``.onnx`` also runs on OpenVINO
when asked (``backend="openvino"``). Each artefact is opened only with its sidecar, whose sha256 must match.
Heavy libraries are imported when an engine is activated.
"""

from __future__ import annotations

from pathlib import Path

from edge.engines.base import Engine, EngineError, Inference, InvalidOutput, TensorSpec
from edge.sidecar import SidecarError, read_sidecar

__all__ = [
    "Engine",
    "EngineError",
    "Inference",
    "InvalidOutput",
    "TensorSpec",
    "open_engine",
    "ENGINE_SUFFIXES",
    "BACKENDS",
]

ENGINE_SUFFIXES = {".onnx": "onnxruntime", ".plan": "tensorrt", ".engine": "tensorrt", ".pt2": "torch"}
BACKENDS = ("auto", "onnxruntime", "openvino", "tensorrt", "torch")
BACKEND_SUFFIXES = {
    "onnxruntime": (".onnx",),
    "openvino": (".onnx",),
    "tensorrt": (".plan", ".engine"),
    "torch": (".pt2",),
}


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
    kind = ENGINE_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise EngineError(f"{path}: unknown artefact type {path.suffix!r}; use {', '.join(ENGINE_SUFFIXES)}")
    if backend not in BACKENDS:
        raise EngineError(f"backend {backend!r}: use one of {', '.join(BACKENDS)}")
    if backend != "auto":
        if path.suffix.lower() not in BACKEND_SUFFIXES[backend]:
            runs = "/".join(BACKEND_SUFFIXES[backend])
            raise EngineError(f"backend {backend} runs {runs} artefacts, not {path.name}")
        kind = backend
    openvino_settings = {"inference_precision": inference_precision, "threads": threads, "cache_dir": cache_dir}
    given = [name for name, value in openvino_settings.items() if value is not None]
    if given and kind != "openvino":
        raise EngineError(f"{', '.join(given)}: OpenVINO settings; add backend openvino (--backend openvino)")
    try:
        sidecar = read_sidecar(path, verify=verify)
    except SidecarError as exc:
        raise EngineError(str(exc)) from exc
    if kind == "openvino":
        from edge.engines.openvino_engine import OpenVinoEngine

        return OpenVinoEngine(path, sidecar, inference_precision or "fp32", threads, cache_dir)
    if kind == "onnxruntime":
        from edge.engines.onnxruntime_engine import OnnxRuntimeEngine

        return OnnxRuntimeEngine(path, sidecar)
    if kind == "tensorrt":
        from edge.engines.tensorrt_engine import TensorRTEngine

        return TensorRTEngine(path, sidecar)
    from edge.engines.torch_engine import TorchEngine

    return TorchEngine(path, sidecar)
