"""ONNX Runtime: CPU everywhere; CUDA or TensorRT execution providers when the installed build has them."""

from __future__ import annotations

import numpy as np

from edge.engines.base import Engine, EngineError

PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


class OnnxRuntimeEngine(Engine):
    backend = "onnxruntime"

    def __init__(self, path, sidecar, providers: list[str] | None = None) -> None:
        super().__init__(path, sidecar)
        self.providers = providers
        self.session = None

    def _activate(self) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise EngineError("ONNX Runtime is not installed: pip install onnxruntime") from exc
        available = ort.get_available_providers()
        providers = self.providers or [p for p in PREFERRED_PROVIDERS if p in available]
        options = ort.SessionOptions()
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=options, providers=providers)
        except Exception as exc:  # ORT raises its own exception types for bad models
            raise EngineError(f"ONNX Runtime cannot load {self.path}: {str(exc)[:300]}") from exc
        names = [o.name for o in self.session.get_outputs()]
        if names[:2] != ["score", "anomaly_map"] or [i.name for i in self.session.get_inputs()] != ["frames"]:
            raise EngineError(f"{self.path} is not an edge-export graph (frames → score, anomaly_map)")

    def _deactivate(self) -> None:
        self.session = None

    def _infer(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        score, anomaly_map = self.session.run(["score", "anomaly_map"], {"frames": frames})
        return score, anomaly_map
