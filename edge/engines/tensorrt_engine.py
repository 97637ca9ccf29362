"""TensorRT: deserialise a plan, one execution context, pinned host and device buffers, one CUDA stream.

Written against NVIDIA's documented Python API of TensorRT 10 (JetPack 6) and 11 (name-based I/O,
``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``) with pycuda for memory and streams;
``tensorrt_rtx`` works the same way. The engine uses the GPU's primary context (``retain_primary_context``, the
one the CUDA runtime and other libraries share), retained once per process as the CUDA runtime does, and makes it
current only around its own work: the thread that activates the engine and the pipeline's inference thread each
push it while they use the GPU and pop it after, so no context stays current on any thread.

A plan is native code for one TensorRT version and one GPU: the sidecar records both and a mismatch is refused
before deserialising, with the instruction to rebuild; TensorRT's own refusal (``deserialize_cuda_engine``
returns None) is reported with its logger's messages. Host-code loading from plans stays off. A machine without
an NVIDIA GPU, TensorRT or pycuda is told so when the engine is opened, before any camera is touched.
"""

from __future__ import annotations

import ctypes
import importlib.util
from pathlib import Path

import numpy as np

from edge.engines.base import Engine, EngineError
from edge.engines.registry import Backend, register_backend


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


def cuda_device_count() -> int:
    """How many CUDA devices the NVIDIA driver reports (0 without the driver or a GPU), read from libcuda itself so
    that it answers without pycuda."""
    try:
        driver = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    count = ctypes.c_int(0)
    if driver.cuInit(0) != 0 or driver.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return count.value


_primary_contexts: dict[int, object] = {}


def primary_context(cuda, ordinal: int = 0):
    """GPU ``ordinal``'s primary context, retained on first use and kept for the life of the process, as the CUDA
    runtime keeps it. It is not released when an engine deactivates: releasing a primary context does not pop it
    (CUDA's cuDevicePrimaryCtxRelease), and pycuda's ``detach`` pushes it first, so it would stay current."""
    if ordinal not in _primary_contexts:
        _primary_contexts[ordinal] = cuda.Device(ordinal).retain_primary_context()
    return _primary_contexts[ordinal]


def runtime_missing() -> list[str]:
    """What this machine lacks to run a TensorRT plan; empty when it has TensorRT, pycuda and an NVIDIA GPU.
    :func:`in_words` says it."""
    missing = []
    try:
        import_tensorrt()
    except EngineError:
        missing.append("TensorRT is not installed")
    if importlib.util.find_spec("pycuda") is None:
        missing.append("pycuda is not installed")
    if cuda_device_count() == 0:
        missing.append("no NVIDIA GPU was found")
    return missing


def in_words(missing: list[str]) -> str:
    """``["a", "b", "c"]`` → ``"a, b and c"``."""
    return " and ".join([", ".join(missing[:-1]), missing[-1]] if len(missing) > 1 else missing)


class TensorRTEngine(Engine):
    backend = "tensorrt"

    def __init__(self, path, sidecar) -> None:
        super().__init__(path, sidecar)
        self._host: dict[str, np.ndarray] = {}
        self._device: dict[str, object] = {}
        missing = runtime_missing()
        if missing:
            source = str(sidecar.source.get("path", ""))
            onnx = source if source.endswith(".onnx") else Path(self.path.name).with_suffix(".onnx").name
            raise EngineError(
                f"{self.path.name} is a TensorRT plan: it needs an NVIDIA GPU with TensorRT (and pycuda), and here "
                f"{in_words(missing)}. On a CPU, run the ONNX it was built from with ONNX Runtime instead "
                f"(--engine {onnx})"
            )

    def _activate(self) -> None:
        trt = import_tensorrt()
        try:
            import pycuda.driver as cuda
        except ImportError as exc:
            raise EngineError(f"pycuda cannot be loaded: {exc}; pip install pycuda (needs the CUDA toolkit)") from exc
        cuda.init()
        major, minor = cuda.Device(0).compute_capability()
        reason = build_mismatch(self.sidecar.build, library_name(trt), trt.__version__, f"{major}.{minor}")
        if reason:
            raise EngineError(f"{self.path.name} cannot run here: {reason}. Rebuild it with edge-build")
        self._cuda, self._context = cuda, primary_context(cuda)
        self._context.push()
        try:
            self._load(trt, cuda)
        except BaseException:
            self._free()
            raise
        finally:
            cuda.Context.pop()

    def _load(self, trt, cuda) -> None:
        """Deserialise the plan and allocate its buffers (the primary context is current)."""
        self._logger = collecting_logger(trt)
        self._runtime = trt.Runtime(self._logger)
        if hasattr(self._runtime, "engine_host_code_allowed"):
            self._runtime.engine_host_code_allowed = False
        self._engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self._engine is None:
            raise EngineError(f"TensorRT refused {self.path.name}: {self._logger.errors()}. Rebuild it with edge-build")
        names = {self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)}
        if names != {"frames", "score", "anomaly_map"}:
            raise EngineError(f"{self.path.name} is not an edge-build plan (frames → score, anomaly_map)")
        self._execution = self._engine.create_execution_context()
        self._stream = cuda.Stream()
        batch = self.frame.max_batch
        for name in sorted(names):
            shape = tuple(batch if d < 0 else d for d in self._engine.get_tensor_shape(name))
            dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(name)))
            self._host[name] = cuda.pagelocked_empty(shape, dtype)
            self._device[name] = cuda.mem_alloc(self._host[name].nbytes)
            self._execution.set_tensor_address(name, int(self._device[name]))

    def _free(self) -> None:
        """Drop the TensorRT objects, then the memory they used (the primary context is current)."""
        self._execution = self._engine = self._runtime = self._stream = None
        for allocation in self._device.values():
            allocation.free()
        self._host, self._device = {}, {}

    def _deactivate(self) -> None:
        self._context.push()
        try:
            self._free()
        finally:
            self._cuda.Context.pop()

    def _gather(self, frames: list[np.ndarray]) -> np.ndarray:
        """The frames copied straight into the pinned input buffer (one copy, not a stack and a copy), returned as
        that buffer, which the next call overwrites."""
        host = self._host["frames"][: len(frames)]
        for i, frame in enumerate(frames):
            host[i] = frame
        return host

    def _infer(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cuda, batch = self._cuda, len(frames)
        self._context.push()  # on this thread, for this batch: the pipeline infers on its own thread
        try:
            if frames.ctypes.data != self._host["frames"].ctypes.data:  # not gathered there already
                self._host["frames"][:batch] = frames
            if not self._execution.set_input_shape("frames", frames.shape):
                raise EngineError(f"{self.path.name} refuses a batch of {batch}: {self._logger.errors()}")
            cuda.memcpy_htod_async(self._device["frames"], self._host["frames"][:batch], self._stream)
            if not self._execution.execute_async_v3(self._stream.handle):
                raise EngineError(f"TensorRT failed to enqueue {self.path.name}: {self._logger.errors()}")
            for name in ("score", "anomaly_map"):
                cuda.memcpy_dtoh_async(self._host[name][:batch], self._device[name], self._stream)
            self._stream.synchronize()
            return self._host["score"][:batch].copy(), self._host["anomaly_map"][:batch].copy()
        finally:
            cuda.Context.pop()


register_backend(
    Backend(
        "tensorrt",
        "TensorRT",
        (".plan", ".engine"),
        (".plan", ".engine"),
        lambda path, sidecar, _: TensorRTEngine(path, sidecar),
    )
)
