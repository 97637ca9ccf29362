"""torch: a ``torch.export`` program (``.pt2``) on a GPU, for machines without TensorRT; CPU as a fallback.

``torch.export.load`` unpickles some payloads (tensor subclasses, script or opaque objects, legacy weight files,
and sample inputs the safe loader refuses), and unpickling runs code. An archive holding any of them is refused
before torch reads it: ours hold only plain tensors, JSON and safely loadable sample inputs.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import numpy as np

from edge.engines.base import Engine, EngineError


def refuse_pickled_payloads(path: Path) -> None:
    """EngineError if loading the ``.pt2`` archive at ``path`` would unpickle anything."""
    import torch

    try:
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                inner = name.split("/", 1)[1] if "/" in name else name  # below the archive's root folder
                if re.fullmatch(r"data/(weights|constants)/[^/]*_config\.json", inner):
                    for fqn, meta in json.loads(archive.read(name)).get("config", {}).items():
                        plain = str(meta.get("path_name", "")).startswith(("weight_", "tensor_"))
                        if meta.get("use_pickle") or not plain:
                            raise EngineError(f"{path}: {fqn} is a pickled object; export plain tensors only")
                elif re.fullmatch(r"data/(weights|constants)/[^/]*\.pt", inner):
                    raise EngineError(f"{path}: {inner} is a legacy pickled payload; export it again")
                elif inner.startswith("data/sample_inputs/"):
                    torch.load(io.BytesIO(archive.read(name)), weights_only=True)  # refuses anything but tensors
    except EngineError:
        raise
    except Exception as exc:  # a damaged zip or JSON, or torch.load refusing something that is not a tensor
        raise EngineError(
            f"{path} is not a torch.export archive that loads without unpickling: {type(exc).__name__}: "
            f"{str(exc)[:200]}; export it again with edge-export --format pt2"
        ) from exc


class TorchEngine(Engine):
    backend = "torch"

    def _activate(self) -> None:
        try:
            import torch
        except ImportError as exc:
            raise EngineError(".pt2 artefacts need torch: pip install torch, or use the .onnx artefact") from exc
        self._torch = torch
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        refuse_pickled_payloads(self.path)
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
