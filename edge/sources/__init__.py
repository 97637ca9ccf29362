"""Frame sources behind one small interface, named by one URI (in the spirit of jetson-inference's videoSource).

* ``basler0`` / ``basler://SERIAL``: a Basler camera through pypylon (:mod:`edge.sources.basler`);
* ``folder://DIR`` (once) or ``folder://DIR?loop=1`` (forever): the images of a folder, sorted by name;
  ``&fps=N`` makes it a live source at N frames per second, like a free-running camera; ``&preload=1`` decodes
  the images once and serves them from memory (a simulated camera that costs nothing to read);
* ``video://FILE``: the frames of a video file.

Each kind registers itself by its URI prefix (:func:`register_source`) in the module that implements it, listed in
:data:`SOURCE_MODULES`: adding a source is one module and its test. A source delivers :class:`Frame` objects in the
pixel format the engine takes. A frame that cannot be read still comes out, with ``pixels`` None and an ``error``
reason, so it gets its ``error`` verdict: no frame is lost.
"""

from __future__ import annotations

import importlib

from edge.sources.base import (
    IMAGE_SUFFIXES,
    SOURCES,
    CameraLost,
    Frame,
    Source,
    SourceError,
    SourceKind,
    convert_pixels,
    open_source,
    register_source,
)
from edge.sources.files import FolderSource, VideoSource

__all__ = [
    "IMAGE_SUFFIXES",
    "SOURCES",
    "CameraLost",
    "FolderSource",
    "Frame",
    "Source",
    "SourceError",
    "SourceKind",
    "VideoSource",
    "convert_pixels",
    "open_source",
    "register_source",
]

#: The modules that register a source kind when imported (light at import: pypylon loads when a camera opens).
SOURCE_MODULES = ("edge.sources.basler", "edge.sources.files")
for _module in SOURCE_MODULES:
    importlib.import_module(_module)
