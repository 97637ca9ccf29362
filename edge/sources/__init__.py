"""Frame sources behind one small interface, named by one URI (in the spirit of jetson-inference's videoSource).

* ``folder://DIR`` (once) or ``folder://DIR?loop=1`` (forever): the images of a folder, sorted by name;
  ``&fps=N`` makes it a live source at N frames per second, like a free-running camera; ``&preload=1`` decodes
  the images once and serves them from memory (a simulated camera that costs nothing to read);
* ``video://FILE``: the frames of a video file;
* ``basler0`` / ``basler://SERIAL``: a Basler camera through pypylon (:mod:`edge.sources.basler`).

A source delivers :class:`Frame` objects in the pixel format the engine takes. A frame that cannot be read
still comes out, with ``pixels`` None and an ``error`` reason, so it gets its ``error`` verdict: no frame is lost.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlparse

from edge.sources.base import IMAGE_SUFFIXES, CameraLost, Frame, Source, SourceError, convert_pixels
from edge.sources.files import FolderSource, VideoSource

__all__ = [
    "IMAGE_SUFFIXES",
    "CameraLost",
    "FolderSource",
    "Frame",
    "Source",
    "SourceError",
    "VideoSource",
    "convert_pixels",
    "open_source",
]


def open_source(uri: str, pixel_format: str, camera: dict | None = None) -> Source:
    """The source a URI names (not opened yet), delivering frames in ``pixel_format``; ``camera`` holds the
    Basler settings (:class:`edge.sources.basler.CameraSettings` fields besides pixel format)."""
    if uri.startswith("folder://"):
        parsed = urlparse(uri)
        folder = (parsed.netloc + parsed.path) if parsed.netloc else parsed.path
        query = parse_qs(parsed.query)
        loop = query.get("loop", ["0"])[0] in ("1", "true", "yes")
        try:
            fps = float(query.get("fps", ["0"])[0])
        except ValueError as exc:
            raise SourceError(f"{uri}: fps must be a number of frames per second") from exc
        preload = query.get("preload", ["0"])[0] in ("1", "true", "yes")
        return FolderSource(Path(folder), pixel_format, loop, uri, fps, preload)
    if uri.startswith("video://"):
        return VideoSource(Path(uri[len("video://") :]), pixel_format, uri)
    if uri.startswith("basler"):
        from edge.sources.basler import BaslerSource, CameraSettings

        return BaslerSource.from_uri(uri, CameraSettings(pixel_format=pixel_format, **(camera or {})))
    raise SourceError(f"unknown source {uri!r}: use basler0, basler://SERIAL, folder://DIR[?loop=1] or video://FILE")
