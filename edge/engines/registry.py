"""The engine backends, registered by name: each backend module registers one :class:`Backend` when imported.

A backend says which artefacts it runs (by suffix), which of them it is the default for (``backend="auto"``), which
of :func:`edge.engines.open_engine`'s settings it takes, and how to make its engine. Adding a backend is one module
that subclasses :class:`~edge.engines.base.Engine` and calls :func:`register_backend`, listed in
:data:`edge.engines.BACKEND_MODULES`; the flags (``--backend``), ``edge-bench`` and the station's settings read
the registry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge.engines.base import Engine, EngineError
from edge.sidecar import Sidecar


@dataclass(frozen=True)
class Backend:
    """One way to run artefacts. ``make(path, sidecar, settings)`` returns the engine (not yet activated), given
    the settings of ``settings`` that were set (the others are None and not passed)."""

    name: str
    title: str  # as people write it, e.g. "ONNX Runtime"
    suffixes: tuple[str, ...]  # the artefacts it runs, e.g. (".onnx",)
    default_for: tuple[str, ...]  # the suffixes it runs when the backend is "auto"
    make: Callable[[Path, Sidecar, dict], Engine]
    settings: tuple[str, ...] = ()  # the open_engine settings it takes, e.g. ("threads",)


BACKENDS: dict[str, Backend] = {}


def register_backend(backend: Backend) -> Backend:
    """Add ``backend`` under its name; a second backend of the same name, or of a suffix another is the default
    for, is a mistake in the code."""
    if backend.name in BACKENDS or backend.name == "auto":
        raise ValueError(f"backend {backend.name!r} is registered twice")
    taken = {s for b in BACKENDS.values() for s in b.default_for} & set(backend.default_for)
    if taken:
        raise ValueError(f"backend {backend.name!r}: another backend is already the default for {sorted(taken)}")
    BACKENDS[backend.name] = backend
    return backend


def backend_names() -> tuple[str, ...]:
    """What ``--backend`` takes: ``auto`` and every registered backend."""
    return ("auto", *BACKENDS)


def choose_backend(path: Path, backend: str, settings: dict) -> Backend:
    """The backend that runs ``path``: by its suffix for ``auto``, else the named one if it runs such artefacts
    and takes every setting given (not None)."""
    suffix = path.suffix.lower()
    known = sorted({s for b in BACKENDS.values() for s in b.default_for})
    if suffix not in known:
        raise EngineError(f"{path}: unknown artefact type {path.suffix!r}; use {', '.join(known)}")
    if backend not in backend_names():
        raise EngineError(f"backend {backend!r}: use one of {', '.join(backend_names())}")
    if backend == "auto":
        chosen = next(b for b in BACKENDS.values() if suffix in b.default_for)
    else:
        chosen = BACKENDS[backend]
        if suffix not in chosen.suffixes:
            raise EngineError(f"backend {backend} runs {'/'.join(chosen.suffixes)} artefacts, not {path.name}")
    refused = [name for name, value in settings.items() if value is not None and name not in chosen.settings]
    if refused:
        owner = next((b for b in BACKENDS.values() if set(refused) <= set(b.settings)), None)
        if owner is None:
            raise EngineError(f"{', '.join(refused)}: no backend takes these settings together")
        raise EngineError(
            f"{', '.join(refused)}: {owner.title} settings; add backend {owner.name} (--backend {owner.name})"
        )
    return chosen
