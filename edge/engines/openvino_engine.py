"""OpenVINO on the CPU: an ``edge-export`` ONNX compiled by OpenVINO's CPU plugin, for x86 machines without a GPU.

The precision of the arithmetic is chosen at activation, not at export:

- ``fp32`` (default): FP32 everywhere, the same numbers as ONNX Runtime within rounding;
- ``bf16``: OpenVINO's ``INFERENCE_PRECISION_HINT=bf16``, convolutions and matrix products in BF16 where the CPU
  has BF16 instructions (AVX512_BF16 or AMX: ``OPTIMIZATION_CAPABILITIES`` lists ``BF16``); refused elsewhere,
  since OpenVINO would emulate it slower than FP32;
- an INT8 artefact (``edge-export --precision int8``, a QDQ graph) runs its quantised convolutions in INT8 (VNNI
  or AMX where present) and the rest in the precision above.

``PERFORMANCE_HINT=LATENCY`` (one request at a time, all cores on it), an optional thread count
(``INFERENCE_NUM_THREADS``), and a compiled-model cache (``CACHE_DIR``, next to the artefact unless given) so a
restart loads the compiled model instead of compiling again. The cache is keyed by the model's bytes and these
settings; deleting it only costs one compilation.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from edge.engines.base import Engine, EngineError
from edge.engines.onnxruntime_engine import refuse_external_data
from edge.engines.registry import Backend, register_backend

log = logging.getLogger(__name__)

INFERENCE_PRECISIONS = {"fp32": "f32", "bf16": "bf16"}


def cache_folder(artefact: Path) -> Path:
    """Where compiled models of ``artefact`` are kept by default: ``memseg.onnx`` → ``memseg.onnx.openvino/``."""
    return artefact.with_name(artefact.name + ".openvino")


def cpu_capabilities(core) -> list[str]:
    """What OpenVINO's CPU plugin can do on this machine, e.g. ``['BF16', 'FP32', 'INT8', …]``."""
    return [str(c) for c in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")]


class OpenVinoEngine(Engine):
    backend = "openvino"

    def __init__(
        self,
        path,
        sidecar,
        inference_precision: str = "fp32",
        threads: int | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        super().__init__(path, sidecar)
        if inference_precision not in INFERENCE_PRECISIONS:
            raise EngineError(
                f"inference precision {inference_precision!r}: OpenVINO takes {', '.join(INFERENCE_PRECISIONS)} "
                "(INT8 comes with the artefact: edge-export --precision int8)"
            )
        if threads is not None and threads < 1:
            raise EngineError(f"threads {threads}: give a positive number, or leave it out for all cores")
        self.inference_precision = inference_precision
        self.threads = threads
        self.cache_dir = Path(cache_dir) if cache_dir is not None else cache_folder(self.path)
        self.loaded_from_cache = False
        self._request = None

    def _activate(self) -> None:
        refuse_external_data(self.path)
        try:
            import openvino as ov
        except ImportError as exc:
            raise EngineError(
                "OpenVINO is not installed: pip install 'edge-inspect[openvino]', or use --backend onnxruntime"
            ) from exc
        core = ov.Core()
        if self.inference_precision == "bf16" and "BF16" not in cpu_capabilities(core):
            raise EngineError(
                f"this CPU ({core.get_property('CPU', 'FULL_DEVICE_NAME')}) has no BF16 instructions (AVX512_BF16 "
                "or AMX): use inference precision fp32, or an INT8 artefact"
            )
        config = {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": INFERENCE_PRECISIONS[self.inference_precision],
        }
        if self.threads is not None:
            config["INFERENCE_NUM_THREADS"] = self.threads
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            config["CACHE_DIR"] = str(self.cache_dir)
        except OSError as exc:
            log.warning("cannot keep compiled models in %s (%s): compiling at every start", self.cache_dir, exc)
        try:
            compiled = core.compile_model(str(self.path), "CPU", config)
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses with its own message
            raise EngineError(f"OpenVINO cannot compile {self.path}: {str(exc)[:300]}") from exc
        inputs = [name for port in compiled.inputs for name in port.get_names()]
        outputs = [name for port in compiled.outputs for name in port.get_names()]
        if inputs != ["frames"] or not {"score", "anomaly_map"} <= set(outputs):
            raise EngineError(f"{self.path} is not an edge-export graph (frames → score, anomaly_map)")
        self._score, self._map = compiled.output("score"), compiled.output("anomaly_map")
        self._request = compiled.create_infer_request()
        self.loaded_from_cache = bool(compiled.get_property("LOADED_FROM_CACHE"))
        log.info(
            "%s on OpenVINO %s (%s): %s",
            self.path.name,
            ov.get_version().split("-")[0],
            self.inference_precision,
            "loaded from the compiled-model cache" if self.loaded_from_cache else "compiled",
        )

    def _deactivate(self) -> None:
        self._request = None

    def _infer(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        results = self._request.infer({"frames": frames})
        return results[self._score].copy(), results[self._map].copy()  # the request reuses its buffers


register_backend(
    Backend(
        "openvino",
        "OpenVINO",
        (".onnx",),
        (),
        lambda path, sidecar, s: OpenVinoEngine(
            path, sidecar, s.get("inference_precision", "fp32"), s.get("threads"), s.get("cache_dir")
        ),
        ("inference_precision", "threads", "cache_dir"),
    )
)
