"""torch: a ``torch.export`` program (``.pt2``) on a GPU, for machines without TensorRT; CPU as a fallback.

On a GPU each batch size from 1 to the artefact's max batch runs as one CUDA graph, all captured at activation
(a capture on the line would stall it) into one shared memory pool, fed and emptied through pinned host buffers.
The precision is the program's own (``edge-export --precision fp16`` makes an FP16 graph with FP32 islands).

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
from edge.engines.registry import Backend, register_backend


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


class GraphedModule:
    """Runs ``module`` (uint8 frames → score, anomaly map) on ``device``: through CUDA graphs on a GPU, directly on
    a CPU. A call returns numpy arrays the caller may keep."""

    def __init__(self, module, device) -> None:
        import torch

        self._torch, self.module, self.device = torch, module, device
        self._graphs: dict[int, tuple] = {}  # batch size → (host in, device in, graph, device outs, host outs)
        # One pool for all the graphs: safe because they never run at once and each one's outputs are copied
        # out before the next replay.
        self._pool = torch.cuda.graph_pool_handle() if device.type == "cuda" else None

    def capture(self, frame_shape: tuple[int, ...], max_batch: int) -> None:
        """Capture the graphs of every batch size up to ``max_batch`` now (a no-op on a CPU)."""
        if self.device.type == "cuda":
            for batch in range(1, max_batch + 1):
                self._graph(batch, frame_shape)

    def _capture(self, shape: tuple[int, ...]) -> tuple:
        torch = self._torch
        host_in = torch.empty(shape, dtype=torch.uint8, pin_memory=True)
        static_in = torch.zeros(shape, dtype=torch.uint8, device=self.device)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.no_grad():
            with torch.cuda.stream(side):  # warm up off the capturing stream, as CUDA graphs require
                for _ in range(3):
                    self.module(static_in)
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self._pool):
                outputs = self.module(static_in)
        host_out = tuple(torch.empty(o.shape, dtype=o.dtype, pin_memory=True) for o in outputs)
        return host_in, static_in, graph, outputs, host_out

    def gather(self, frames: list[np.ndarray]) -> np.ndarray:
        """The frames copied straight into the pinned input buffer of their batch size's graph, returned as that
        buffer (the next call overwrites it: pass it to ``__call__`` only); on a CPU, one stacked array."""
        if self.device.type != "cuda":
            return np.stack(frames)
        host = self._graph(len(frames), frames[0].shape)[0].numpy()
        for i, frame in enumerate(frames):
            host[i] = frame
        return host

    def _graph(self, batch: int, frame_shape: tuple[int, ...]) -> tuple:
        if batch not in self._graphs:
            self._graphs[batch] = self._capture((batch, *frame_shape))
        return self._graphs[batch]

    def __call__(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        torch = self._torch
        if self.device.type != "cuda":
            with torch.inference_mode():
                score, anomaly_map = self.module(torch.from_numpy(frames))
            return score.float().numpy(), anomaly_map.numpy()
        host_in, static_in, graph, outputs, host_out = self._graph(len(frames), frames.shape[1:])
        if frames.ctypes.data != host_in.data_ptr():  # not gathered there already
            host_in.numpy()[...] = frames
        static_in.copy_(host_in, non_blocking=True)
        graph.replay()
        for host, device_tensor in zip(host_out, outputs, strict=True):
            host.copy_(device_tensor, non_blocking=True)
        torch.cuda.current_stream(self.device).synchronize()
        score, anomaly_map = (host.numpy().copy() for host in host_out)  # the buffers are reused next call
        return score.astype(np.float32), anomaly_map


class TorchEngine(Engine):
    backend = "torch"

    def _activate(self) -> None:
        try:
            import torch
        except ImportError as exc:
            raise EngineError(
                ".pt2 artefacts need torch: pip install 'edge-inspect[train]', or use the .onnx artefact"
            ) from exc
        try:
            from torch.export.passes import move_to_device_pass
        except ImportError as exc:
            raise EngineError(f".pt2 artefacts need torch 2.6 or newer (this is {torch.__version__})") from exc
        self._torch = torch
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        refuse_pickled_payloads(self.path)
        try:
            # move_to_device_pass also rewrites the device the graph's own checks and factories name (exported
            # on a CPU, they would refuse a frame on the GPU); Module.to would move the weights alone.
            program = move_to_device_pass(torch.export.load(str(self.path)), self.device)
            module = program.module()
        except Exception as exc:  # torch raises many types for a bad archive
            raise EngineError(f"torch cannot load {self.path}: {str(exc)[:300]}") from exc
        self._run = GraphedModule(module, self.device)
        try:
            self._run.capture(self.frame.frame_shape(), self.frame.max_batch)
        except Exception as exc:  # out of memory, or an op that cannot be captured
            raise EngineError(f"cannot capture CUDA graphs for {self.path.name}: {str(exc)[:300]}") from exc

    def _deactivate(self) -> None:
        self._run = None

    def _gather(self, frames: list[np.ndarray]) -> np.ndarray:
        return self._run.gather(frames)

    def _infer(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._run(frames)


register_backend(Backend("torch", "torch", (".pt2",), (".pt2",), lambda path, sidecar, _: TorchEngine(path, sidecar)))
