"""Where verdicts go besides ZeroMQ: JSON lines, and a bounded folder of rejected frames with heatmaps.

Neither may slow the line: the reject store writes from its own thread, drops images (counted) when it falls
behind, evicts the oldest files to stay within its file and size limits, and reports write errors at most once
a minute. When the disk is full or over quota it evicts its own oldest images to make room (never anyone else's
files); a read-only or vanished folder only costs the images. A partly written image is removed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import queue
import sys
import threading
import time
from collections import deque
from pathlib import Path

import cv2
import numpy as np

from edge.sidecar import FrameSpec

log = logging.getLogger(__name__)


class JsonlSink:
    """Every verdict as one JSON line, to a file or standard output (``-``)."""

    def __init__(self, target: str) -> None:
        self._handle = sys.stdout if target == "-" else open(target, "a", encoding="utf-8")  # noqa: SIM115

    def write(self, verdict: dict, job) -> None:
        self._handle.write(json.dumps(verdict, separators=(",", ":")) + "\n")
        self._handle.flush()

    def close(self) -> None:
        if self._handle is not sys.stdout:
            self._handle.close()


def overlay(pixels: np.ndarray, anomaly_map: np.ndarray, frame: FrameSpec) -> np.ndarray:
    """The frame (BGR for writing) with the anomaly map as a heatmap blended over its ROI."""
    image = cv2.cvtColor(pixels, cv2.COLOR_GRAY2BGR) if pixels.ndim == 2 else pixels
    if frame.pixel_format == "rgb8":
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    image = image.copy()
    x, y, w, h = frame.region
    heat = cv2.resize(np.clip(anomaly_map.astype(np.float32), 0, 1), (w, h), interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET)
    image[y : y + h, x : x + w] = cv2.addWeighted(image[y : y + h, x : x + w], 0.5, colour, 0.5, 0)
    return image


class RejectStore:
    """Saves rejected frames with their heatmap into ``folder``, within ``max_files`` and ``max_mb``."""

    def __init__(self, folder: Path, frame: FrameSpec, max_files: int = 1000, max_mb: float = 500.0) -> None:
        self.folder, self.frame = Path(folder), frame
        self.max_files, self.max_bytes = max_files, int(max_mb * 1e6)
        self.folder.mkdir(parents=True, exist_ok=True)
        existing = sorted((p for p in self.folder.glob("*.png") if p.is_file()), key=lambda p: p.stat().st_mtime)
        self._files = deque((p, p.stat().st_size) for p in existing)
        self._bytes = sum(size for _, size in self._files)
        self.saved = self.dropped = self.failed = self.evicted_for_space = 0
        self._last_error_report = float("-inf")  # the first error is always reported
        self._queue: queue.Queue = queue.Queue(maxsize=16)
        self._thread = threading.Thread(target=self._work, name="rejects", daemon=True)
        self._thread.start()

    def write(self, verdict: dict, job) -> None:
        if verdict["verdict"] != "fail" or job.frame.pixels is None or job.anomaly_map is None:
            return
        try:
            self._queue.put_nowait((verdict, job.frame.pixels, job.anomaly_map))
        except queue.Full:
            self.dropped += 1

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            verdict, pixels, anomaly_map = item
            name = f"{verdict['time'].replace(':', '')}_{verdict['frame_id']:08d}_{verdict['score']:.3f}.png"
            ok, data = cv2.imencode(".png", overlay(pixels, anomaly_map, self.frame))
            try:
                if not ok:
                    raise OSError("PNG encoding failed")
                self._save(self.folder / name, data.tobytes())
            except OSError as exc:
                self.failed += 1
                if time.monotonic() - self._last_error_report > 60:
                    self._last_error_report = time.monotonic()
                    log.warning("cannot save rejected image in %s: %s (verdicts are unaffected)", self.folder, exc)

    def _save(self, path: Path, data: bytes) -> None:
        """Write ``path``; on a full disk or quota, evict our oldest images until it fits or none are left."""
        while True:
            try:
                path.write_bytes(data)
                break
            except OSError as exc:
                with contextlib.suppress(OSError):
                    path.unlink(missing_ok=True)  # no half-written image left behind
                if exc.errno not in (errno.ENOSPC, errno.EDQUOT) or not self._files:
                    raise
                self._evict_oldest()
                self.evicted_for_space += 1
        self.saved += 1
        self._files.append((path, len(data)))
        self._bytes += len(data)
        while self._files and (len(self._files) > self.max_files or self._bytes > self.max_bytes):
            self._evict_oldest()

    def _evict_oldest(self) -> None:
        path, size = self._files.popleft()
        self._bytes -= size
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)

    def close(self, timeout: float = 5.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)
