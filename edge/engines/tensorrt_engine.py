"""TensorRT: deserialise a plan, one execution context, pinned host and device buffers, one CUDA stream.

Written against NVIDIA's documented Python API of TensorRT 10 (JetPack) and 11 (name-based I/O,
``execute_async_v3``) with pycuda for memory and streams; ``tensorrt_rtx`` works the same way. A plan is native
code for one TensorRT version and one GPU: the sidecar records both and a mismatch is refused before
deserialising, with the instruction to rebuild; TensorRT's own refusal (``deserialize_cuda_engine`` returns None)
is reported with its logger's messages. Host-code loading from plans stays off.
"""

from __future__ import annotations

import numpy as np

from edge.engines.base import Engine, EngineError


def import_tensorrt():
    """The TensorRT module: ``tensorrt`` if installed, else TensorRT-RTX."""
    for name in ("tensorrt", "tensorrt_rtx", "tensorrt_rtx_bindings"):
        try:
            module = __import__(name)
        except ImportError:
            continue
        if hasattr(module, "Builder"):  # PyPI's 'tensorrt' stub without libraries has no Builder
            return module
    raise EngineError("TensorRT is not installed: install TensorRT (JetPack ships it) or use the .onnx artefact")


def library_name(trt) -> str:
    """``tensorrt`` or ``tensorrt_rtx``: plans of one never load in the other."""
    return "tensorrt_rtx" if trt.__name__.startswith("tensorrt_rtx") else "tensorrt"


def collecting_logger(trt, min_severity=None):
    """A TensorRT logger that keeps its messages, so a refusal can say why."""

    class CollectingLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.messages: list[tuple[object, str]] = []

        def log(self, severity, msg) -> None:
            self.messages.append((severity, msg))

        def errors(self) -> str:
            worst = [m for s, m in self.messages if s in (trt.ILogger.ERROR, trt.ILogger.INTERNAL_ERROR)]
            return "; ".join(worst or [m for _, m in self.messages[-3:]]) or "no message from TensorRT"

    return CollectingLogger()


def build_mismatch(build: dict, trt_library: str, version: str, compute_capability: str) -> str | None:
    """Why a plan built as ``build`` (from the sidecar) cannot run here, or None."""
    library = build.get("library", "tensorrt")
    if library != trt_library:
        return f"it was built with {library} and this machine runs {trt_library}"
    built_version = str(build.get("tensorrt_version", ""))
    if built_version.split(".")[:2] != version.split(".")[:2]:
        return f"it was built with TensorRT {built_version or '?'} and this machine has {version}"
    built_sm = str(build.get("compute_capability", ""))
    if built_sm and compute_capability and built_sm != compute_capability:
        return f"it was built for compute capability {built_sm} and this GPU is {compute_capability}"
    return None


class TensorRTEngine(Engine):
    backend = "tensorrt"

    def _activate(self) -> None:
        trt = import_tensorrt()
        try:
            import pycuda.driver as cuda
        except ImportError as exc:
            raise EngineError("pycuda is not installed: pip install pycuda (needs the CUDA toolkit)") from exc
        cuda.init()
        device = cuda.Device(0)
        self._cuda = cuda
        self._context = device.make_context()
        try:
            major, minor = device.compute_capability()
            reason = build_mismatch(self.sidecar.build, library_name(trt), trt.__version__, f"{major}.{minor}")
            if reason:
                raise EngineError(f"{self.path.name} cannot run here: {reason}. Rebuild it with edge-build")
            self._logger = collecting_logger(trt)
            self._runtime = trt.Runtime(self._logger)
            if hasattr(self._runtime, "engine_host_code_allowed"):
                self._runtime.engine_host_code_allowed = False
            self._engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
            if self._engine is None:
                raise EngineError(
                    f"TensorRT refused {self.path.name}: {self._logger.errors()}. Rebuild it with edge-build"
                )
            self._execution = self._engine.create_execution_context()
            self._stream = cuda.Stream()
            self._host, self._device = {}, {}
            batch = self.frame.max_batch
            for i in range(self._engine.num_io_tensors):
                name = self._engine.get_tensor_name(i)
                shape = tuple(batch if d < 0 else d for d in self._engine.get_tensor_shape(name))
                dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(name)))
                self._host[name] = cuda.pagelocked_empty(shape, dtype)
                self._device[name] = cuda.mem_alloc(self._host[name].nbytes)
                self._execution.set_tensor_address(name, int(self._device[name]))
            if set(self._host) != {"frames", "score", "anomaly_map"}:
                raise EngineError(f"{self.path.name} is not an edge-build plan (frames → score, anomaly_map)")
        except BaseException:
            self._context.pop()
            raise

    def _deactivate(self) -> None:
        self._execution = self._engine = self._runtime = None
        self._host, self._device = {}, {}
        self._context.pop()
        self._context.detach()

    def _infer(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cuda, batch = self._cuda, len(frames)
        self._context.push()
        try:
            self._host["frames"][:batch] = frames
            self._execution.set_input_shape("frames", frames.shape)
            cuda.memcpy_htod_async(self._device["frames"], self._host["frames"][:batch], self._stream)
            if not self._execution.execute_async_v3(self._stream.handle):
                raise EngineError(f"TensorRT failed to enqueue {self.path.name}: {self._logger.errors()}")
            for name in ("score", "anomaly_map"):
                cuda.memcpy_dtoh_async(self._host[name][:batch], self._device[name], self._stream)
            self._stream.synchronize()
            return self._host["score"][:batch].copy(), self._host["anomaly_map"][:batch].copy()
        finally:
            self._context.pop()
