"""Frame sources behind one small interface, named by one URI (in the spirit of jetson-inference's videoSource).

* ``folder://DIR`` (once) or ``folder://DIR?loop=1`` (forever): the images of a folder, sorted by name;
  ``&fps=N`` makes it a live source at N frames per second, like a free-running camera;
* ``video://FILE``: the frames of a video file;
* ``basler0`` / ``basler://SERIAL``: a Basler camera through pypylon (:mod:`edge.basler`).

A source delivers :class:`Frame` objects in the pixel format the engine takes. A frame that cannot be read
still comes out, with ``pixels`` None and an ``error`` reason, so it gets its ``error`` verdict: no frame is lost.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import cv2
import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class SourceError(Exception):
    """A source that cannot be opened; the message says why and what to do."""


class CameraLost(Exception):
    """A live source stopped answering (unplugged, power cycle, network): reconnect."""


@dataclass
class Frame:
    """One captured frame: pixels as the camera delivered them, or None with the reason it could not be read."""

    frame_id: int
    t_capture_ns: int  # wall clock (ns since the epoch) of exposure/capture, as close as the source knows
    t_receive_ns: int  # wall clock when the host had the frame
    pixels: np.ndarray | None
    error: str | None = None  # reason code when pixels is None
    detail: str = ""  # human-readable detail for errors
    name: str = ""  # file name or camera serial, for logs and reject files
    t_received: float = 0.0  # time.perf_counter() at receive, for latencies
    camera_timestamp: int = 0  # the camera's own timestamp (device ticks), where it has one


class Source(ABC):
    """``open`` → ``read(timeout)`` until it returns None at the end (finite sources) → ``close``.

    A ``live`` source produces frames on its own clock (a camera): when the line falls behind, frames overrun.
    A source that is not live (files) waits for the line instead.
    """

    uri: str
    finite: bool
    live: bool = False

    def __enter__(self) -> Source:
        self.open()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @abstractmethod
    def open(self) -> None: ...

    @abstractmethod
    def read(self, timeout: float = 1.0) -> Frame | None:
        """The next frame; None at the end of a finite source. Live sources raise TimeoutError when no frame
        came within ``timeout`` seconds."""

    @abstractmethod
    def close(self) -> None: ...

    def reconnect(self) -> None:
        """Open again after :class:`CameraLost`; raises SourceError while the source is still absent."""
        self.close()
        self.open()


def convert_pixels(bgr_or_grey: np.ndarray, pixel_format: str) -> np.ndarray:
    """An OpenCV-decoded image (BGR or grey) in the engine's pixel format."""
    if bgr_or_grey.ndim == 2:
        grey = bgr_or_grey
        return (
            grey
            if pixel_format == "mono8"
            else cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR if pixel_format == "bgr8" else cv2.COLOR_GRAY2RGB)
        )
    if pixel_format == "mono8":
        return cv2.cvtColor(bgr_or_grey, cv2.COLOR_BGR2GRAY)
    return bgr_or_grey if pixel_format == "bgr8" else cv2.cvtColor(bgr_or_grey, cv2.COLOR_BGR2RGB)


def _now() -> tuple[int, float]:
    return time.time_ns(), time.perf_counter()


class FolderSource(Source):
    """The images of a folder, sorted by name, once or looping; an unreadable file becomes an error frame.

    With ``fps`` it behaves like a camera: frames come on that clock whether or not the line keeps up.
    """

    def __init__(self, folder: Path, pixel_format: str, loop: bool = False, uri: str = "", fps: float = 0.0) -> None:
        self.folder, self.pixel_format, self.loop = Path(folder), pixel_format, loop
        self.finite = not loop
        self.live, self.fps = fps > 0, fps
        self._due = 0.0
        self.uri = uri or f"folder://{folder}"
        self._paths: list[Path] = []
        self._next = 0

    def open(self) -> None:
        if not self.folder.is_dir():
            raise SourceError(f"{self.uri}: folder not found: {self.folder}")
        self._paths = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not self._paths:
            raise SourceError(f"{self.uri}: no images ({', '.join(IMAGE_SUFFIXES)}) in {self.folder}")

    def read(self, timeout: float = 1.0) -> Frame | None:
        if self._next >= len(self._paths) and not self.loop:
            return None
        if self.live:
            self._due = max(self._due + 1.0 / self.fps, time.perf_counter()) if self._due else time.perf_counter()
            time.sleep(max(0.0, self._due - time.perf_counter()))
        path = self._paths[self._next % len(self._paths)]
        frame_id = self._next
        self._next += 1
        wall, perf = _now()
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if image is None or image.dtype != np.uint8 or image.ndim not in (2, 3):
            return Frame(frame_id, wall, wall, None, "unreadable_image", f"cannot decode {path.name}", path.name, perf)
        if image.ndim == 3 and image.shape[2] == 4:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
        return Frame(
            frame_id, wall, time.time_ns(), convert_pixels(image, self.pixel_format), name=path.name, t_received=perf
        )

    def close(self) -> None:
        self._paths = []


class VideoSource(Source):
    """The frames of a video file (OpenCV's decoders)."""

    finite = True

    def __init__(self, path: Path, pixel_format: str, uri: str = "") -> None:
        self.path, self.pixel_format = Path(path), pixel_format
        self.uri = uri or f"video://{path}"
        self._capture = None
        self._next = 0

    def open(self) -> None:
        if not self.path.is_file():
            raise SourceError(f"{self.uri}: file not found: {self.path}")
        self._capture = cv2.VideoCapture(str(self.path))
        if not self._capture.isOpened():
            raise SourceError(f"{self.uri}: OpenCV cannot decode {self.path}")

    def read(self, timeout: float = 1.0) -> Frame | None:
        ok, image = self._capture.read()
        if not ok:
            return None
        wall, perf = _now()
        frame = Frame(
            self._next,
            wall,
            wall,
            convert_pixels(image, self.pixel_format),
            name=f"{self.path.name}#{self._next}",
            t_received=perf,
        )
        self._next += 1
        return frame

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None


def open_source(uri: str, pixel_format: str, camera: dict | None = None) -> Source:
    """The source a URI names (not opened yet), delivering frames in ``pixel_format``; ``camera`` holds the
    Basler settings (:class:`edge.basler.CameraSettings` fields besides pixel format)."""
    if uri.startswith("folder://"):
        parsed = urlparse(uri)
        folder = (parsed.netloc + parsed.path) if parsed.netloc else parsed.path
        query = parse_qs(parsed.query)
        loop = query.get("loop", ["0"])[0] in ("1", "true", "yes")
        try:
            fps = float(query.get("fps", ["0"])[0])
        except ValueError as exc:
            raise SourceError(f"{uri}: fps must be a number of frames per second") from exc
        return FolderSource(Path(folder), pixel_format, loop, uri, fps)
    if uri.startswith("video://"):
        return VideoSource(Path(uri[len("video://") :]), pixel_format, uri)
    if uri.startswith("basler"):
        from edge.basler import BaslerSource, CameraSettings

        return BaslerSource.from_uri(uri, CameraSettings(pixel_format=pixel_format, **(camera or {})))
    raise SourceError(f"unknown source {uri!r}: use basler0, basler://SERIAL, folder://DIR[?loop=1] or video://FILE")
