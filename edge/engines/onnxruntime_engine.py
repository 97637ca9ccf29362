"""ONNX Runtime: CPU everywhere; CUDA or TensorRT execution providers when the installed build has them."""

from __future__ import annotations

import logging

import numpy as np

from edge.engines.base import Engine, EngineError
from edge.engines.registry import Backend, register_backend

log = logging.getLogger(__name__)

PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def refuse_external_data(path) -> None:
    """Refuse an ONNX whose tensors live in other files: edge-export writes one self-contained file, and data
    loaded from elsewhere (outside the folder, through a link, of any size) is not covered by the sidecar's hash."""
    try:
        import onnx
    except ImportError as exc:
        raise EngineError("the onnx package is needed to check ONNX artefacts: pip install onnx") from exc
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # DecodeError and friends for a malformed protobuf
        raise EngineError(f"{path} is not a valid ONNX file: {str(exc)[:200]}") from exc
    external = [t.name for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        raise EngineError(
            f"{path} keeps {len(external)} tensors in external files ({', '.join(external[:3])}): only "
            "self-contained ONNX files from edge-export are loaded"
        )


class OnnxRuntimeEngine(Engine):
    backend = "onnxruntime"

    def __init__(self, path, sidecar, providers: list[str] | None = None) -> None:
        super().__init__(path, sidecar)
        self.providers = providers
        self.session = None

    def _activate(self) -> None:
        refuse_external_data(self.path)
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise EngineError("ONNX Runtime is not installed: pip install onnxruntime") from exc
        available = ort.get_available_providers()
        providers = self.providers or [p for p in PREFERRED_PROVIDERS if p in available]
        options = ort.SessionOptions()
        options.log_severity_level = 3
        # Worker threads wait for work asleep instead of spinning: on a CPU the line's own threads (capture,
        # judging, publishing) then get the cores between operators, and inference no longer stalls on a worker
        # that the scheduler took off its core (benchmarks/results/line-2026-12-07/spinning/).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=options, providers=providers)
        except Exception as exc:  # ORT raises its own exception types for bad models
            raise EngineError(f"ONNX Runtime cannot load {self.path}: {str(exc)[:300]}") from exc
        names = [o.name for o in self.session.get_outputs()]
        if names[:2] != ["score", "anomaly_map"] or [i.name for i in self.session.get_inputs()] != ["frames"]:
            raise EngineError(f"{self.path} is not an edge-export graph (frames → score, anomaly_map)")
        if self.sidecar.precision == "fp16" and self.session.get_providers()[0] == "CPUExecutionProvider":
            log.warning(
                "%s is an FP16 graph, which ONNX Runtime runs slower on a CPU than FP32: export with --precision "
                "fp32 (or int8) for CPUs, or run it with --backend openvino",
                self.path.name,
            )

    def _deactivate(self) -> None:
        self.session = None

    def _infer(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        score, anomaly_map = self.session.run(["score", "anomaly_map"], {"frames": frames})
        return score, anomaly_map


register_backend(
    Backend(
        "onnxruntime", "ONNX Runtime", (".onnx",), (".onnx",), lambda path, sidecar, _: OnnxRuntimeEngine(path, sidecar)
    )
)
