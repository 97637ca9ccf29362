"""Where verdicts go besides ZeroMQ: the :class:`Sink` protocol, JSON lines, heatmaps, console previews, and a
bounded folder of reject records.

A reject record is one picture per failed part (the frame, its anomaly map over it on the threshold colour scale,
the region boxes and a caption: see :func:`reject_picture`) and, next to it, the frame as captured (lossless PNG:
what an operator's review hands to calibration and training) and the verdict as JSON. No sink may
slow the line: pictures are drawn and encoded on the sinks' own threads, which drop work (counted) when they fall
behind; the reject store also works at most a fifth of the time (a record costs about 20 ms of CPU at 128 px, so
a run of failures would otherwise take a core from inference on a small machine), evicts the oldest records to
stay within its file and size limits, and reports write errors at most once a minute. When the disk is full or
over quota it evicts its own oldest records to make room (never anyone else's files); a read-only or vanished
folder only costs the records. A partly written record is removed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from edge.heatmap import blend, colour_bar, display_values
from edge.sidecar import FrameSpec

log = logging.getLogger(__name__)


class Sink(Protocol):
    """Consumes every published verdict, on the publishing thread (``write`` must be quick: anything slow belongs
    on a thread of the sink's own). A sink that raises is left out for the rest of the run and the station turns
    ``degraded``; a ``required`` one (a record of every verdict) ends the run instead."""

    name: str
    required: bool

    def write(self, verdict: dict, job) -> None: ...

    def flush(self) -> None:
        """Nothing is waiting on the line: bring what the sink holds to its target (called on the publishing
        thread)."""

    def close(self) -> None: ...


class JsonlSink:
    """Every verdict as one JSON line, to a file or standard output (``-``): the JSON the publisher sent, flushed
    whenever the line has nothing waiting and at least every ``flush_s`` (not once per verdict). Required: a
    record that misses verdicts is worse than a station that stops and says why."""

    name, required = "jsonl", True

    def __init__(self, target: str, flush_s: float = 0.5) -> None:
        self._handle = sys.stdout.buffer if target == "-" else open(target, "ab")  # noqa: SIM115
        self.flush_s = flush_s
        self._failed = False
        self._unflushed_since: float | None = None

    def write(self, verdict: dict, job) -> None:
        line = job.record or json.dumps(verdict, separators=(",", ":")).encode()
        self._guarded(self._handle.write, line + b"\n")
        now = time.monotonic()
        if self._unflushed_since is None:
            self._unflushed_since = now
        elif now - self._unflushed_since >= self.flush_s:
            self.flush()

    def flush(self) -> None:
        if self._unflushed_since is not None:
            self._unflushed_since = None
            self._guarded(self._handle.flush)

    def _guarded(self, call: Callable, *args) -> None:
        try:
            call(*args)
        except (OSError, ValueError):  # ValueError: the file was closed under us
            self._failed = True
            raise

    def close(self) -> None:
        if self._handle is not sys.stdout.buffer:
            with contextlib.suppress(OSError, ValueError):  # what it could not write has already been reported
                self._handle.close()
        elif not self._failed:
            with contextlib.suppress(OSError, ValueError):
                self._handle.flush()
        elif self._failed:  # a closed pipe: nothing more reaches it, and Python's exit must not try again
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)


class HeatmapSink:
    """The anomaly map of every rejected frame as a greyscale PNG on ``heatmap/<station>`` (on the display scale of
    :mod:`edge.heatmap`: 128 is the pixel threshold), tagged with the verdict's ``seq``. Encoded on the sink's own
    thread; ``send(seq, png)`` is called from there (the pipeline hands it to the publishing thread, which owns
    the socket). Maps it cannot keep up with are dropped (counted)."""

    name, required = "heatmaps", False

    def __init__(self, send: Callable[[int, bytes], None], queue_size: int = 32) -> None:
        self.send = send
        self.dropped = 0
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._thread = threading.Thread(target=self._work, name="heatmaps", daemon=True)
        self._thread.start()

    def write(self, verdict: dict, job) -> None:
        if verdict["verdict"] != "fail" or job.anomaly_map is None:
            return
        try:
            self._queue.put_nowait((verdict["seq"], job.anomaly_map, verdict["pixel_threshold"]))
        except queue.Full:
            self.dropped += 1

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            seq, anomaly_map, pixel_threshold = item
            grey = np.rint(display_values(anomaly_map, pixel_threshold) * 255).astype(np.uint8)
            ok, png = cv2.imencode(".png", grey)
            if ok:
                self.send(seq, png.tobytes())

    def flush(self) -> None:
        pass

    def close(self, timeout: float = 5.0) -> None:
        """Encode and send what is queued (at most ``timeout`` seconds), then stop."""
        self._queue.put(None)
        self._thread.join(timeout)


class PreviewSink:
    """A downscaled JPEG of the latest judged frame, its anomaly map over the ROI and its region boxes, for
    consoles on ``preview/<station>``: at most ``fps`` a second, and only while someone subscribes (``wanted()``).
    Encoded on the sink's own thread, one frame at a time (frames arriving meanwhile are skipped: a preview is a
    glimpse, not a record); ``send(header, jpeg)`` is called from there."""

    name, required = "preview", False

    def __init__(self, send: Callable[[dict, bytes], None], wanted: Callable[[], bool], fps: float) -> None:
        self.send, self.wanted, self.interval_s = send, wanted, 1.0 / fps
        self.sent = 0
        self._last = float("-inf")
        self._queue: queue.Queue = queue.Queue(maxsize=1)
        self._thread = threading.Thread(target=self._work, name="preview", daemon=True)
        self._thread.start()

    def write(self, verdict: dict, job) -> None:
        now = time.monotonic()
        if job.frame.pixels is None or now - self._last < self.interval_s or not self.wanted():
            return
        self._last = now
        header = {k: verdict.get(k) for k in ("seq", "frame_id", "verdict", "reason", "score", "threshold", "recipe")}
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait((header, verdict, job.frame.pixels, job.anomaly_map, job.recipe.engine.frame))

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            header, verdict, pixels, anomaly_map, frame = item
            ok, jpeg = cv2.imencode(".jpg", preview_picture(verdict, pixels, anomaly_map, frame)[..., ::-1])
            if ok:
                self.sent += 1
                self.send(header, jpeg.tobytes())

    def flush(self) -> None:
        pass

    def close(self, timeout: float = 5.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)


PREVIEW_WIDTH = 480  # preview pictures are this wide (frames shrunk, small ones enlarged)


def preview_picture(verdict: dict, pixels: np.ndarray, anomaly_map: np.ndarray | None, frame: FrameSpec) -> np.ndarray:
    """The frame (RGB) at :data:`PREVIEW_WIDTH`, the anomaly map over its ROI and the verdict's region boxes."""
    picture = _rgb(pixels, frame.pixel_format)
    x, y, w, h = frame.region
    if anomaly_map is not None and verdict.get("pixel_threshold") is not None:
        picture[y : y + h, x : x + w] = blend(picture[y : y + h, x : x + w], anomaly_map, verdict["pixel_threshold"])
    k = PREVIEW_WIDTH / picture.shape[1]
    size = (PREVIEW_WIDTH, max(1, round(picture.shape[0] * k)))
    picture = cv2.resize(picture, size, interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_NEAREST)
    for region in verdict.get("regions") or ():
        corner = (round(region["x"] * k), round(region["y"] * k))
        far = (round((region["x"] + region["w"]) * k) - 1, round((region["y"] + region["h"]) * k) - 1)
        cv2.rectangle(picture, corner, far, BOX, 2)
    return picture


PANEL_SIZE = 384  # frames are enlarged by a whole factor to about this size (pixels stay exact), never shrunk
TEXT = (235, 235, 235)
BOX = (0, 255, 0)


def _rgb(pixels: np.ndarray, pixel_format: str) -> np.ndarray:
    if pixels.ndim == 2:
        return cv2.cvtColor(pixels, cv2.COLOR_GRAY2RGB)
    return pixels[..., ::-1].copy() if pixel_format == "bgr8" else pixels.copy()


def _text_lines(lines: list[str], width: int, scale: float) -> list[str]:
    """``lines`` wrapped at spaces to fit ``width`` pixels in OpenCV's simplex font at ``scale``."""
    wrapped = []
    for line in lines:
        words, current = line.split(" "), ""
        for word in words:
            trial = f"{current} {word}" if current else word
            if current and cv2.getTextSize(trial, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] > width:
                wrapped.append(current)
                current = word
            else:
                current = trial
        wrapped.append(current)
    return wrapped


def reject_picture(
    verdict: dict, pixels: np.ndarray, anomaly_map: np.ndarray, frame: FrameSpec, source: str = ""
) -> np.ndarray:
    """One failed part as an RGB image an engineer can read on its own (``source``: the frame's file name or
    camera serial).

    Left: the frame as the camera gave it (enlarged by a whole factor for small frames, each pixel repeated).
    Right: the same frame with the anomaly map over the ROI on the threshold colour scale (:mod:`edge.heatmap`:
    red is over the pixel threshold), and the verdict's region boxes. Below: the colour scale and a caption with
    station, seq, frame id, time, score and thresholds, camera and source, and the model.
    """
    height, width = pixels.shape[:2]
    k = max(1, round(PANEL_SIZE / max(width, height)))
    raw = cv2.resize(_rgb(pixels, frame.pixel_format), (width * k, height * k), interpolation=cv2.INTER_NEAREST)
    over = raw.copy()
    x, y, w, h = frame.region
    pixel_threshold = verdict["pixel_threshold"]
    roi = over[y * k : (y + h) * k, x * k : (x + w) * k]
    roi[:] = blend(roi, anomaly_map, pixel_threshold)
    if (x, y, w, h) != (0, 0, width, height):
        cv2.rectangle(over, (x * k, y * k), ((x + w) * k - 1, (y + h) * k - 1), TEXT, 1)
    thickness = max(1, k // 2)
    for region in verdict["regions"]:
        left, top = region["x"] * k, region["y"] * k
        right, bottom = (region["x"] + region["w"]) * k - 1, (region["y"] + region["h"]) * k - 1
        cv2.rectangle(over, (left, top), (right, bottom), BOX, thickness)
    gap = 8
    canvas_width = 2 * width * k + 3 * gap
    scale = max(0.45, min(1.2, canvas_width / 1400))
    line_height = int(30 * scale) + 4
    origin = [f"camera {verdict['camera'] or '-'}", *([f"source {source}"] if source else [])]
    origin.append(f"model {verdict['model'][:19]}")
    caption = _text_lines(
        [
            f"{verdict['verdict'].upper()}  station {verdict['station']}  seq {verdict['seq']}  "
            f"frame {verdict['frame_id']}  {verdict['time']}",
            f"reason: score {verdict['score']:.4f} >= threshold {verdict['threshold']:.4f}; "
            f"{len(verdict['regions'])} region(s) over the pixel threshold {pixel_threshold:.4f} (green boxes)",
            "  ".join(origin),
        ],
        canvas_width - 2 * gap,
        scale,
    )
    bar_height = line_height
    title_height = line_height + gap
    caption_top = title_height + height * k + gap
    canvas_height = caption_top + 2 * line_height + bar_height + len(caption) * line_height + gap
    canvas = np.full((canvas_height, canvas_width, 3), 30, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for left, title in ((gap, "frame"), (2 * gap + width * k, "anomaly map over the frame, regions boxed")):
        cv2.putText(canvas, title, (left, line_height), font, scale, TEXT, 1, cv2.LINE_AA)
    canvas[title_height : title_height + height * k, gap : gap + width * k] = raw
    canvas[title_height : title_height + height * k, 2 * gap + width * k : 2 * gap + 2 * width * k] = over
    bar_width = min(canvas_width - 2 * gap, 512)
    bar_top = caption_top + line_height
    canvas[bar_top : bar_top + bar_height, gap : gap + bar_width] = colour_bar(bar_width, bar_height)
    labels = (
        (gap, "0"),
        (gap + bar_width // 2, f"pixel threshold {pixel_threshold:.4g}"),
        (gap + bar_width, f">= {2 * pixel_threshold:.4g}"),
    )
    for i, (at, label) in enumerate(labels):
        size = cv2.getTextSize(label, font, scale * 0.8, 1)[0][0]
        left = min(max(gap, at - size * i // 2), canvas_width - gap - size)
        cv2.putText(canvas, label, (left, bar_top - 4), font, scale * 0.8, TEXT, 1, cv2.LINE_AA)
    for i, line in enumerate(caption):
        at = bar_top + bar_height + (i + 1) * line_height
        cv2.putText(canvas, line, (gap, at), font, scale, TEXT, 1, cv2.LINE_AA)
    return canvas


class RejectStore:
    """Keeps a record of each failed part in ``folder``: ``NAME.png`` (:func:`reject_picture`) and ``NAME.json``
    (its verdict, as published), within ``max_files`` records and ``max_mb``. Best effort: it never raises into
    the line."""

    name, required = "rejects", False

    def __init__(
        self, folder: Path, frame: FrameSpec, max_files: int = 1000, max_mb: float = 500.0, duty: float = 0.2
    ) -> None:
        self.folder, self.frame = Path(folder), frame
        self.max_files, self.max_bytes = max_files, int(max_mb * 1e6)
        self.duty = duty  # the share of the time the store's thread may work: it rests in between
        self.folder.mkdir(parents=True, exist_ok=True)
        self._files = deque((p, _record_size(p)) for p in reject_pictures(self.folder))
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
            self._queue.put_nowait((verdict, job.frame.pixels, job.anomaly_map, job.frame.name))
        except queue.Full:
            self.dropped += 1

    def flush(self) -> None:
        pass

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            started = time.perf_counter()
            self._record(*item)
            time.sleep((time.perf_counter() - started) * (1 / self.duty - 1))

    def _record(self, verdict: dict, pixels: np.ndarray, anomaly_map: np.ndarray, source: str) -> None:
        name = f"{verdict['time'].replace(':', '')}_{verdict['frame_id']:08d}_{verdict['score']:.3f}"
        try:
            picture = reject_picture(verdict, pixels, anomaly_map, self.frame, source)
            ok, data = cv2.imencode(".png", cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
            ok_frame, frame = cv2.imencode(".png", _rgb(pixels, self.frame.pixel_format)[..., ::-1])
            if not (ok and ok_frame):
                raise OSError("PNG encoding failed")
            record = json.dumps(verdict, indent=1).encode()
            self._save(self.folder / f"{name}.png", data.tobytes(), frame.tobytes(), record)
        except Exception as exc:  # the store's thread must outlive any one record; verdicts never depend on it
            self.failed += 1
            if time.monotonic() - self._last_error_report > 60:
                self._last_error_report = time.monotonic()
                log.warning("cannot save rejected image in %s: %s (verdicts are unaffected)", self.folder, exc)

    def _save(self, path: Path, picture: bytes, frame: bytes, record: bytes) -> None:
        """Write ``path``, the frame beside it and its JSON; on a full disk or quota, evict our oldest records
        until they fit or none are left."""
        while True:
            try:
                path.write_bytes(picture)
                frame_path(path).write_bytes(frame)
                path.with_suffix(".json").write_bytes(record)
                break
            except OSError as exc:
                _remove(path)  # no half-written record left behind
                if exc.errno not in (errno.ENOSPC, errno.EDQUOT) or not self._files:
                    raise
                self._evict_oldest()
                self.evicted_for_space += 1
        self.saved += 1
        size = len(picture) + len(frame) + len(record)
        self._files.append((path, size))
        self._bytes += size
        while self._files and (len(self._files) > self.max_files or self._bytes > self.max_bytes):
            self._evict_oldest()

    def _evict_oldest(self) -> None:
        path, size = self._files.popleft()
        self._bytes -= size
        _remove(path)

    def close(self, timeout: float = 5.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)


FRAME_SUFFIX = ".frame.png"  # a reject record's frame as captured, beside its picture: NAME.frame.png


def reject_pictures(folder: Path) -> list[Path]:
    """The pictures of the reject records in ``folder``, oldest first (one per record)."""
    pictures = [p for p in folder.glob("*.png") if not p.name.endswith(FRAME_SUFFIX)]
    times = {}
    for picture in pictures:
        with contextlib.suppress(OSError):  # a record evicted meanwhile
            times[picture] = picture.stat().st_mtime
    return sorted(times, key=times.__getitem__)


def frame_path(picture: Path) -> Path:
    """The frame of the reject record whose picture is ``picture`` (``NAME.png`` → ``NAME.frame.png``)."""
    return picture.with_name(picture.stem + FRAME_SUFFIX)


def _record_size(picture: Path) -> int:
    """Bytes of a record already in the folder: its picture and, where present, its frame and JSON."""
    parts = (frame_path(picture), picture.with_suffix(".json"))
    return picture.stat().st_size + sum(p.stat().st_size for p in parts if p.is_file())


def _remove(picture: Path) -> None:
    """Remove a record: its picture, frame and JSON, whichever exist."""
    for path in (picture, frame_path(picture), picture.with_suffix(".json")):
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
