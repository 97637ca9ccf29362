"""Fault injection for the line: a real engine whose outputs go wrong on chosen calls, a real folder of images whose
reads go wrong on chosen reads, and ``edge-run`` with them put in place of its engine and source.

``python -m tests.fault_parts '{"engine": {...}, "source": {...}}' EDGE-RUN-FLAGS...`` runs the real ``edge-run``
(``edge.cli.run_main``) in this process with the faults given as JSON: ``engine`` maps call numbers (0: the
warm-up edge-run makes before the first frame) to a fault of :data:`ENGINE_FAULTS`, ``source`` maps read numbers
to one of :data:`SOURCE_FAULTS` (of the camera ``camera`` only, where given: a multi-camera station), ``slow_s``
is how long a ``slow`` call takes.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import numpy as np

from edge.engines import Engine
from edge.sources import CameraLost, Frame, Source, open_source

ENGINE_FAULTS = ("short", "misshapen", "dtype", "nan", "raise", "slow", "hang")
SOURCE_FAULTS = ("raise", "stall", "malformed", "duplicate", "backwards", "lost", "unplug")


class FaultyOutputs(Engine):
    """A real engine whose outputs go wrong on the calls named in ``faults`` (call number → fault): ``short`` (one
    score and map fewer than frames), ``misshapen`` (a map one row short), ``dtype`` (float64 scores), ``nan``,
    ``raise``, ``slow`` (``slow_s`` longer), ``hang`` (until :attr:`release` is set)."""

    backend = "faulty"

    def __init__(self, inner: Engine, faults: dict[int, str], slow_s: float = 1.0) -> None:
        super().__init__(inner.path, inner.sidecar)
        unknown = set(faults.values()) - set(ENGINE_FAULTS)
        if unknown:
            raise ValueError(f"engine faults {unknown}: use {ENGINE_FAULTS}")
        self.inner, self.faults, self.slow_s, self.calls = inner, dict(faults), slow_s, 0
        self.release = threading.Event()

    def _activate(self) -> None:
        self.inner.activate()

    def _deactivate(self) -> None:
        self.inner.deactivate()

    def _infer(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        fault, self.calls = self.faults.get(self.calls), self.calls + 1
        if fault == "raise":
            raise RuntimeError("injected engine failure")
        if fault == "hang":
            self.release.wait()
        if fault == "slow":
            time.sleep(self.slow_s)
        out = self.inner.infer(frames)
        score, anomaly_map = out.score, out.anomaly_map
        if fault == "short":
            return score[:-1], anomaly_map[:-1]
        if fault == "misshapen":
            return score, anomaly_map[:, :, :-1]
        if fault == "dtype":
            return score.astype(np.float64), anomaly_map
        if fault == "nan":
            return np.full_like(score, np.nan), anomaly_map
        return score, anomaly_map


class MalformedPixels:
    """What a broken driver might hand over instead of an array: it has no shape."""

    dtype = np.uint8


class FaultySource(Source):
    """A real folder source whose reads go wrong on the reads named in ``faults`` (read number → fault): ``raise``
        (an exception no source is expected to raise), ``stall`` (the read blocks, ignoring its timeout, until
        :attr:`release`), ``malformed`` (pixels that are no array), ``duplicate`` / ``backwards`` (the previous frame's
        id again / an id lower than it), ``lost`` (``CameraLost``, then the camera answers again), ``unplug`` (a Basler
    camera's pylon device destroyed under the grab, as a pulled cable leaves it; then the source's own reconnect)."""

    def __init__(self, inner: Source, faults: dict[int, str]) -> None:
        unknown = set(faults.values()) - set(SOURCE_FAULTS)
        if unknown:
            raise ValueError(f"source faults {unknown}: use {SOURCE_FAULTS}")
        self.inner, self.faults, self.reads = inner, dict(faults), 0
        self.uri, self.finite, self.live = inner.uri, inner.finite, inner.live
        self.release = threading.Event()
        self.reconnects = 0
        self.unplugged = False

    def open(self) -> None:
        self.inner.open()

    def close(self) -> None:
        self.inner.close()

    def reconnect(self) -> None:
        self.reconnects += 1
        if self.unplugged:
            self.inner.reconnect()

    def read(self, timeout: float = 1.0) -> Frame | None:
        fault, self.reads = self.faults.get(self.reads), self.reads + 1
        if fault == "raise":
            raise RuntimeError("injected: GenICam node access outside the wrapped calls")
        if fault == "stall":
            self.release.wait()
        if fault == "lost":
            raise CameraLost("injected: the camera is gone")
        if fault == "unplug":
            self.unplugged = True
            self.inner._camera.DestroyDevice()
        frame = self.inner.read(timeout)
        if frame is None:
            return None
        if fault == "malformed":
            frame.pixels = MalformedPixels()
        elif fault == "duplicate":
            frame.frame_id -= 1
        elif fault == "backwards":
            frame.frame_id -= 5
        return frame


def run_station_with_faults(spec: dict, argv: list[str]) -> int:
    """``edge-run argv`` with the engine and source it opens wrapped in the faults of ``spec``."""
    import edge.run
    from edge.cli import run_main
    from edge.engines import open_engine

    engine_faults = {int(k): v for k, v in spec.get("engine", {}).items()}
    source_faults = {int(k): v for k, v in spec.get("source", {}).items()}

    def faulty_engine(path: Path, **settings) -> Engine:
        return FaultyOutputs(open_engine(path, **settings), engine_faults, spec.get("slow_s", 1.0))

    def faulty_source(uri: str, pixel_format: str, camera: dict | None = None) -> Source:
        source = open_source(uri, pixel_format, camera)
        return FaultySource(source, source_faults) if spec.get("camera", uri) == uri else source

    edge.run.open_engine, edge.run.open_source = faulty_engine, faulty_source
    return run_main(argv)


if __name__ == "__main__":
    sys.exit(run_station_with_faults(json.loads(sys.argv[1]), sys.argv[2:]))
