"""Recipes: what a station runs for one product, switched between two frames without stopping the line.

A recipe is one TOML file in the recipes folder, named after it (``DIR/NAME.toml``)::

    engine = "part-a.onnx"      # the artefact, its sidecar (and calibration) next to it; relative to DIR
    threshold = 0.52            # optional: the image-score threshold (default: the sidecar's calibration)
    pixel_threshold = 0.5       # optional
    [camera]                    # optional: what the camera changes between two frames
    exposure_us = 3000
    gain = 2.0

The ROI and frame size are the artefact's own (``edge-export --roi``); a recipe whose frames are not the camera's
is refused. :meth:`RecipeBook.load` opens, activates and warms the engine (on the caller's thread, beside the
running one), so the switch itself costs nothing on the line.
"""

from __future__ import annotations

import re
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.engines import Engine, EngineError, open_engine
from edge.judge import ThresholdError, Thresholds
from edge.sidecar import FrameSpec

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 (JetPack 6)
    import tomli as tomllib

CAMERA_KEYS = ("exposure_us", "gain")  # the settings a recipe may change on the camera
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class RecipeError(Exception):
    """A recipe cannot be used; the message says which and why (the running recipe is untouched)."""


@dataclass(eq=False)
class Recipe:
    """One product's engine, thresholds and camera settings. ``name`` is None for a station run without a
    recipes folder (``--engine``). Jobs in flight are counted so that a retired recipe's engine is released
    only after its last frame is judged."""

    name: str | None
    engine: Engine
    thresholds: Thresholds
    camera: dict = field(default_factory=dict)
    in_flight: int = 0
    retired: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def model(self) -> str:
        return f"sha256:{self.engine.sidecar.sha256}"

    def describe(self) -> dict:
        """The recipe on the status topic and in status answers."""
        return {"name": self.name, "model": self.model, "engine": self.engine.path.name}

    def enter(self) -> None:
        """A frame was tagged with this recipe (capture)."""
        with self._lock:
            self.in_flight += 1

    def leave(self) -> bool:
        """A frame of this recipe was published; True when a retired recipe has no frame left (release it)."""
        with self._lock:
            self.in_flight -= 1
            return self.retired and self.in_flight == 0

    def retire(self) -> bool:
        """Another recipe is in force; True when no frame of this one is left (release it now)."""
        with self._lock:
            self.retired = True
            return self.in_flight == 0


class RecipeBook:
    """The recipes in ``folder``; :meth:`load` gives a ready recipe for frames like ``frame`` (the camera's)."""

    def __init__(self, folder: Path, engine_settings: dict | None = None, max_batch: int | None = None) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise RecipeError(f"recipes folder {self.folder} does not exist: give --recipes a folder of NAME.toml")
        self.engine_settings = engine_settings or {}
        self.max_batch = max_batch

    def names(self) -> list[str]:
        return sorted(p.stem for p in self.folder.glob("*.toml") if NAME.fullmatch(p.stem))

    def read(self, name: str) -> dict:
        """The recipe file's settings, checked (RecipeError naming the problem)."""
        if not isinstance(name, str) or not NAME.fullmatch(name) or not (self.folder / f"{name}.toml").is_file():
            known = ", ".join(self.names()) or "none"
            raise RecipeError(f"unknown recipe {name!r} (known: {known}); add {self.folder}/{name}.toml")
        path = self.folder / f"{name}.toml"
        try:
            values = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise RecipeError(f"recipe {name}: {path} cannot be read: {exc}") from exc
        unknown = set(values) - {"engine", "threshold", "pixel_threshold", "camera"}
        if unknown:
            raise RecipeError(f"recipe {name}: unknown keys {', '.join(sorted(unknown))} in {path}")
        if not isinstance(values.get("engine"), str):
            raise RecipeError(f'recipe {name}: {path} needs engine = "ARTEFACT" (relative to {self.folder})')
        camera = values.get("camera", {})
        if not isinstance(camera, dict) or set(camera) - set(CAMERA_KEYS):
            raise RecipeError(f"recipe {name}: [camera] takes only {', '.join(CAMERA_KEYS)}")
        for key, value in {**camera, **{k: values[k] for k in ("threshold", "pixel_threshold") if k in values}}.items():
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise RecipeError(f"recipe {name}: {key} must be a number, got {value!r}")
        return values

    def open(self, name: str) -> tuple[Engine, Thresholds, dict]:
        """Recipe ``name``'s engine (opened, not yet active), thresholds and camera settings."""
        values = self.read(name)
        engine_path = self.folder / values["engine"]
        try:
            engine = open_engine(engine_path, **self.engine_settings)
            thresholds = Thresholds.resolve(engine.sidecar, values.get("threshold"), values.get("pixel_threshold"))
        except (EngineError, ThresholdError) as exc:
            raise RecipeError(f"recipe {name}: {exc}") from exc
        return engine, thresholds, dict(values.get("camera", {}))

    def load(self, name: str, frame: FrameSpec) -> Recipe:
        """Open, check and warm recipe ``name``; RecipeError (one line) when it cannot run on ``frame``."""
        engine, thresholds, camera = self.open(name)
        theirs, engine_path = engine.frame, engine.path
        if (theirs.width, theirs.height, theirs.pixel_format) != (
            frame.width,
            frame.height,
            frame.pixel_format,
        ):
            raise RecipeError(
                f"recipe {name}: {engine_path.name} takes {theirs.width}x{theirs.height} {theirs.pixel_format} "
                f"frames, the camera gives {frame.width}x{frame.height} {frame.pixel_format}: export it for this "
                "camera (edge-export --frame-size, --pixel-format)"
            )
        batch = min(self.max_batch or theirs.max_batch, theirs.max_batch)
        try:
            engine.activate()
            engine.infer(np.zeros((batch, *theirs.frame_shape()), np.uint8))  # warm-up, and proof it runs
        except Exception as exc:  # a damaged artefact: whatever the runtime raises
            engine.deactivate()
            raise RecipeError(f"recipe {name}: {engine_path.name} does not run: {str(exc)[:300]}") from exc
        return Recipe(name, engine, thresholds, camera)
