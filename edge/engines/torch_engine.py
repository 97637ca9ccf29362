"""torch: a ``torch.export`` program (``.pt2``) on a GPU, for machines without TensorRT; CPU as a fallback."""

from __future__ import annotations

import numpy as np

from edge.engines.base import Engine, EngineError


class TorchEngine(Engine):
    backend = "torch"

    def _activate(self) -> None:
        try:
            import torch
        except ImportError as exc:
            raise EngineError(".pt2 artefacts need torch: pip install torch, or use the .onnx artefact") from exc
        self._torch = torch
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            self._module = torch.export.load(str(self.path)).module().to(self.device)
        except Exception as exc:  # torch raises many types for a bad archive
            raise EngineError(f"torch cannot load {self.path}: {str(exc)[:300]}") from exc

    def _deactivate(self) -> None:
        self._module = None

    def _infer(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        torch = self._torch
        with torch.inference_mode():
            score, anomaly_map = self._module(torch.from_numpy(frames).to(self.device))
        return score.float().cpu().numpy(), anomaly_map.cpu().numpy()
