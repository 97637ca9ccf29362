"""What every frame source shares: the :class:`Frame`, the :class:`Source` interface, their errors, the registry
of source kinds by URI, and the conversion of decoded images into the engine's pixel format."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

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

    def adjust(self, settings: dict) -> None:
        """Change camera settings (``exposure_us``, ``gain``) between two frames, for a recipe switch; a source
        without such settings refuses (SourceError)."""
        raise SourceError(f"{self.uri} has no camera settings to change ({', '.join(sorted(settings))})")


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


def now() -> tuple[int, float]:
    return time.time_ns(), time.perf_counter()


@dataclass(frozen=True)
class SourceKind:
    """One kind of source, named by how its URIs begin. ``make(uri, pixel_format, camera)`` returns the source,
    not opened yet (``camera``: the station's camera settings, :meth:`edge.config.StationConfig.camera_settings`)."""

    name: str
    prefix: str  # e.g. "folder://"; the first registered kind whose prefix a URI starts with opens it
    usage: str  # e.g. "folder://DIR[?loop=1]", for the message that lists what is known
    make: Callable[[str, str, dict], Source]


SOURCES: dict[str, SourceKind] = {}


def register_source(kind: SourceKind) -> SourceKind:
    """Add ``kind`` under its name (once)."""
    if kind.name in SOURCES:
        raise ValueError(f"source kind {kind.name!r} is registered twice")
    SOURCES[kind.name] = kind
    return kind


def open_source(uri: str, pixel_format: str, camera: dict | None = None) -> Source:
    """The source a URI names (not opened yet), delivering frames in ``pixel_format``; ``camera`` holds the camera
    settings besides frame size and pixel format."""
    kind = next((k for k in SOURCES.values() if uri.startswith(k.prefix)), None)
    if kind is None:
        known = [k.usage for k in SOURCES.values()]
        raise SourceError(f"unknown source {uri!r}: use {', '.join(known[:-1])} or {known[-1]}")
    return kind.make(uri, pixel_format, camera or {})
