"""Recipes: what a station runs for one product, switched between two frames without stopping the line.

A recipe is one TOML file in the recipes folder, named after it (``DIR/NAME.toml``)::

    engine = "part-a.onnx"      # the artefact, its sidecar (and calibration) next to it; relative to DIR
    number = 1                  # optional: the PLC's recipe number (Modbus), unique in the folder
    threshold = 0.52            # optional: the image-score threshold (default: the sidecar's calibration)
    pixel_threshold = 0.5       # optional
    [camera]                    # optional: what the camera changes between two frames
    exposure_us = 3000
    gain = 2.0

The ROI and frame size are the artefact's own (``edge-export --roi``); a recipe whose frames are not the camera's
is refused. :meth:`RecipeBook.load` opens, activates and warms the engine (on the caller's thread, beside the
running one), so the switch itself costs nothing on the line. The book keeps one engine per distinct artefact:
cameras of one station on the same artefact share it, and it is released when no recipe in force uses it.
"""

from __future__ import annotations

import functools
import re
import sys
import threading
from collections.abc import Callable
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
    only after its last frame is judged; :meth:`release` gives the engine back (to the book that shares it)."""

    name: str | None
    engine: Engine
    thresholds: Thresholds
    camera: dict = field(default_factory=dict)
    number: int | None = None  # the PLC's recipe number, if the recipe has one
    give_back: Callable[[], None] | None = None  # releases the engine (default: deactivate it)
    in_flight: int = 0
    retired: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def model(self) -> str:
        return f"sha256:{self.engine.sidecar.sha256}"

    def describe(self) -> dict:
        """The recipe on the status topic and in status answers."""
        number = {"number": self.number} if self.number is not None else {}
        return {"name": self.name, "model": self.model, "engine": self.engine.path.name, **number}

    def release(self) -> None:
        """This recipe no longer needs its engine."""
        (self.give_back or self.engine.deactivate)()

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
        self._engines: dict[Path, list] = {}  # artefact (resolved) → [engine, recipes using it]
        self._lock = threading.Lock()

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
        unknown = set(values) - {"engine", "number", "threshold", "pixel_threshold", "camera"}
        if unknown:
            raise RecipeError(f"recipe {name}: unknown keys {', '.join(sorted(unknown))} in {path}")
        if not isinstance(values.get("engine"), str):
            raise RecipeError(f'recipe {name}: {path} needs engine = "ARTEFACT" (relative to {self.folder})')
        number = values.get("number", 1)
        if not isinstance(number, int) or isinstance(number, bool) or not 1 <= number <= 65535:
            raise RecipeError(f"recipe {name}: number must be an integer 1…65535 (the PLC's recipe number)")
        camera = values.get("camera", {})
        if not isinstance(camera, dict) or set(camera) - set(CAMERA_KEYS):
            raise RecipeError(f"recipe {name}: [camera] takes only {', '.join(CAMERA_KEYS)}")
        for key, value in {**camera, **{k: values[k] for k in ("threshold", "pixel_threshold") if k in values}}.items():
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise RecipeError(f"recipe {name}: {key} must be a number, got {value!r}")
        return values

    def name_of(self, number: int) -> str:
        """The recipe whose ``number`` the PLC gave (RecipeError when none or several have it)."""
        names = []
        for name in self.names():
            try:
                values = self.read(name)
            except RecipeError:
                continue  # a damaged recipe is refused when it is asked for by name
            if values.get("number") == number:
                names.append(name)
        if len(names) != 1:
            problem = f"recipes {' and '.join(names)} both have" if names else "no recipe has"
            raise RecipeError(f"{problem} number = {number} in {self.folder}: give each recipe its own number")
        return names[0]

    def open(self, name: str) -> tuple[Engine, Thresholds, dict]:
        """Recipe ``name``'s engine (opened, not yet active), thresholds and camera settings."""
        values = self.read(name)
        try:
            engine = open_engine(self.folder / values["engine"], **self.engine_settings)
            thresholds = Thresholds.resolve(engine.sidecar, values.get("threshold"), values.get("pixel_threshold"))
        except (EngineError, ThresholdError) as exc:
            raise RecipeError(f"recipe {name}: {exc}") from exc
        return engine, thresholds, dict(values.get("camera", {}))

    def adopt(self, engine: Engine, users: int) -> None:
        """Share the station's starting engine (activated by the station) among ``users`` recipes in force."""
        with self._lock:
            self._engines[engine.path.resolve()] = [engine, users]

    def starting(self, name: str | None, engine: Engine, thresholds: Thresholds) -> Recipe:
        """The recipe a line starts with, on the station's engine (released through the book when adopted)."""
        number = self.read(name).get("number") if name else None
        return Recipe(name, engine, thresholds, number=number, give_back=functools.partial(self.release, engine))

    def release(self, engine: Engine) -> None:
        """A recipe no longer uses ``engine``: it is deactivated once no recipe does."""
        with self._lock:
            entry = self._engines.get(engine.path.resolve())
            if entry is not None and entry[0] is engine:
                entry[1] -= 1
                if entry[1] > 0:
                    return
                del self._engines[engine.path.resolve()]
        engine.deactivate()

    def load(self, name: str, frame: FrameSpec | None = None) -> Recipe:
        """Recipe ``name`` ready for frames like ``frame`` (None: a camera still to be opened for the recipe's own
        frames): its engine shared when another recipe in force runs the same artefact, else opened, checked and
        warmed here; RecipeError (one line) when it cannot run."""
        values = self.read(name)
        path = (self.folder / values["engine"]).resolve()
        with self._lock:
            entry = self._engines.get(path)
            if entry is not None:
                entry[1] += 1
        engine = entry[0] if entry is not None else self._share(self._warm(name, frame), path)
        try:
            self._check_frame(name, engine, frame)
            thresholds = Thresholds.resolve(engine.sidecar, values.get("threshold"), values.get("pixel_threshold"))
        except (RecipeError, ThresholdError) as exc:
            self.release(engine)
            raise RecipeError(f"recipe {name}: {exc}" if isinstance(exc, ThresholdError) else str(exc)) from exc
        camera = dict(values.get("camera", {}))
        return Recipe(name, engine, thresholds, camera, values.get("number"), functools.partial(self.release, engine))

    def _share(self, engine: Engine, path: Path) -> Engine:
        """Keep ``engine`` for other recipes on its artefact (or, when another thread warmed one meanwhile, use
        that one and drop this)."""
        with self._lock:
            entry = self._engines.setdefault(path, [engine, 0])
            entry[1] += 1
        if entry[0] is not engine:
            engine.deactivate()
        return entry[0]

    @staticmethod
    def _check_frame(name: str, engine: Engine, frame: FrameSpec | None) -> None:
        theirs = engine.frame
        mine = (theirs.width, theirs.height, theirs.pixel_format)
        if frame is not None and mine != (frame.width, frame.height, frame.pixel_format):
            raise RecipeError(
                f"recipe {name}: {engine.path.name} takes {theirs.width}x{theirs.height} {theirs.pixel_format} "
                f"frames, the camera gives {frame.width}x{frame.height} {frame.pixel_format}: export it for this "
                "camera (edge-export --frame-size, --pixel-format)"
            )

    def _warm(self, name: str, frame: FrameSpec | None) -> Engine:
        """Recipe ``name``'s engine opened, checked against ``frame``, activated and warmed."""
        engine, _, _ = self.open(name)
        self._check_frame(name, engine, frame)
        theirs = engine.frame
        batch = min(self.max_batch or theirs.max_batch, theirs.max_batch)
        try:
            engine.activate()
            engine.infer(np.zeros((batch, *theirs.frame_shape()), np.uint8))  # warm-up, and proof it runs
        except Exception as exc:  # a damaged artefact: whatever the runtime raises
            engine.deactivate()
            raise RecipeError(f"recipe {name}: {engine.path.name} does not run: {str(exc)[:300]}") from exc
        return engine
