"""The station side of the soak with faults: the real ``edge-run`` whose engine fails its next call on SIGUSR1 and
whose Basler camera is unplugged (its pylon device destroyed under the grab, as a pulled cable leaves it) on
SIGUSR2. ``benchmarks.soak --faults`` starts it and sends the signals; sink errors and subscriber churn come from
outside the process (``benchmarks/soak.py``).

    python -m benchmarks.soak_station EDGE-RUN-FLAGS...
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

import numpy as np

from edge.engines import Engine
from edge.sources import Source


class FailOnRequest(Engine):
    """A real engine that raises on its next call after :attr:`fail` is set (once per request)."""

    def __init__(self, inner: Engine) -> None:
        super().__init__(inner.path, inner.sidecar)
        self.inner, self.backend = inner, inner.backend
        self.fail = threading.Event()

    def _activate(self) -> None:
        self.inner.activate()

    def _deactivate(self) -> None:
        self.inner.deactivate()

    def _infer(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.fail.is_set():
            self.fail.clear()
            raise RuntimeError("soak: injected engine failure")
        out = self.inner.infer(frames)
        return out.score, out.anomaly_map


class UnplugOnRequest:
    """A real Basler source whose device is destroyed at its next read after :attr:`unplug` is set; everything
    else is the source's own (reconnecting included)."""

    def __init__(self, inner: Source) -> None:
        self.inner = inner
        self.unplug = threading.Event()

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def read(self, timeout: float = 1.0):
        camera = getattr(self.inner, "_camera", None)
        if self.unplug.is_set() and camera is not None:
            self.unplug.clear()
            camera.DestroyDevice()
        return self.inner.read(timeout)


def main(argv: list[str]) -> int:
    import edge.run
    from edge.cli import run_main
    from edge.engines import open_engine
    from edge.sources import open_source

    engines: list[FailOnRequest] = []
    sources: list[UnplugOnRequest] = []

    def failing_engine(path: Path, **settings) -> Engine:
        engines.append(FailOnRequest(open_engine(path, **settings)))
        return engines[-1]

    def unpluggable_source(uri: str, pixel_format: str, camera: dict | None = None):
        sources.append(UnplugOnRequest(open_source(uri, pixel_format, camera)))
        return sources[-1]

    signal.signal(signal.SIGUSR1, lambda *_: [e.fail.set() for e in engines])
    signal.signal(signal.SIGUSR2, lambda *_: [s.unplug.set() for s in sources])
    edge.run.open_engine, edge.run.open_source = failing_engine, unpluggable_source
    return run_main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
