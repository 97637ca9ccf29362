"""Sources from files: a folder of images (once, looping, or paced like a camera) and a video file."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import cv2
import numpy as np

from edge.sources.base import (
    IMAGE_SUFFIXES,
    Frame,
    Source,
    SourceError,
    SourceKind,
    convert_pixels,
    now,
    register_source,
)
from edge.sources.pacing import Pacer

#: The most decoded image data ``preload`` holds in memory.
PRELOAD_LIMIT = 2 * 2**30


class FolderSource(Source):
    """The images of a folder, sorted by name, once or looping; an unreadable file becomes an error frame.

    With ``fps`` it behaves like a camera: frames come on that clock whether or not the line keeps up. With
    ``preload`` every image is decoded once, at open, and served from memory, so reading costs what a camera's
    frame costs (nothing to decode): for benchmarks and simulated cameras, bounded by :data:`PRELOAD_LIMIT`.
    """

    def __init__(
        self,
        folder: Path,
        pixel_format: str,
        loop: bool = False,
        uri: str = "",
        fps: float = 0.0,
        preload: bool = False,
    ) -> None:
        self.folder, self.pixel_format, self.loop, self.preload = Path(folder), pixel_format, loop, preload
        self.finite = not loop
        self.live, self.fps = fps > 0, fps
        self._pacer = Pacer(fps)
        self.uri = uri or f"folder://{folder}"
        self._paths: list[Path] = []
        self._decoded: list[np.ndarray | None] = []
        self._next = 0

    def open(self) -> None:
        if not self.folder.is_dir():
            raise SourceError(f"{self.uri}: folder not found: {self.folder}")
        self._paths = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not self._paths:
            raise SourceError(f"{self.uri}: no images ({', '.join(IMAGE_SUFFIXES)}) in {self.folder}")
        if self.preload:
            self._decoded, size = [], 0
            for path in self._paths:
                self._decoded.append(self._decode(path))
                if self._decoded[-1] is not None:
                    self._decoded[-1].setflags(write=False)  # handed out again on every pass: nobody may write
                size += 0 if self._decoded[-1] is None else self._decoded[-1].nbytes
                if size > PRELOAD_LIMIT:
                    self._decoded = []
                    raise SourceError(
                        f"{self.uri}: preload=1 would hold over {PRELOAD_LIMIT // 2**20} MiB of decoded images; "
                        "use fewer images or drop preload"
                    )

    def _decode(self, path: Path) -> np.ndarray | None:
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if image is None or image.dtype != np.uint8 or image.ndim not in (2, 3):
            return None
        if image.ndim == 3 and image.shape[2] == 4:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
        return convert_pixels(image, self.pixel_format)

    def read(self, timeout: float = 1.0) -> Frame | None:
        if self._next >= len(self._paths) and not self.loop:
            return None
        if self.live:
            self._pacer.wait()
        index = self._next % len(self._paths)
        path, frame_id = self._paths[index], self._next
        self._next += 1
        wall, perf = now()
        pixels = self._decoded[index] if self.preload else self._decode(path)
        if pixels is None:
            return Frame(frame_id, wall, wall, None, "unreadable_image", f"cannot decode {path.name}", path.name, perf)
        return Frame(frame_id, wall, time.time_ns(), pixels, name=path.name, t_received=perf)

    def close(self) -> None:
        self._paths, self._decoded = [], []


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
        wall, perf = now()
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


def folder_from_uri(uri: str, pixel_format: str, camera: dict) -> FolderSource:
    """``folder://DIR[?loop=1][&fps=N][&preload=1]``."""
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


register_source(SourceKind("folder", "folder://", "folder://DIR[?loop=1]", folder_from_uri))
register_source(
    SourceKind(
        "video", "video://", "video://FILE", lambda uri, fmt, _: VideoSource(Path(uri[len("video://") :]), fmt, uri)
    )
)
