"""The bridge's outputs by name: each protocol registers an :class:`OutputKind` in its own module (listed in
:data:`OUTPUT_MODULES`), with a settings dataclass whose defaults and help texts are the only place its settings
are written down: the ``[bridge]`` keys of the TOML file and the ``edge-bridge`` flags are made from it.

A settings dataclass has an ``address`` field (the key and flag are the output's name: ``opcua = "…"``,
``--opcua``; ``"off"`` turns the output off) and its other fields become ``<name>_<field>`` (``modbus_queue``,
``--modbus-queue``); a ``check()`` method refuses values that cannot work with a :class:`~edge.config.ConfigError`.
Adding a protocol is one module (its settings, its :class:`Output`, one :func:`register_output` call) and its
test.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from edge.bridge.station import StationView

OFF = "off"
OUTPUT_MODULES = ("edge.bridge.opcua", "edge.bridge.modbus", "edge.bridge.mqtt")


class OutputError(Exception):
    """An output cannot start (its port is taken, its certificates do not load); the message says why."""


class Output(Protocol):
    """One protocol serving every station's view; all methods run on the bridge's asyncio loop."""

    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def verdict(self, view: StationView) -> None:
        """A new verdict of ``view``'s station (``view.last``)."""

    async def current(self, view: StationView) -> None:
        """The station's current values from its snapshot: not a new result."""

    async def status(self, view: StationView) -> None:
        """The station's state, health or counters changed."""

    def tick(self) -> None:
        """Once a second."""

    def clients(self) -> int:
        """Connected clients now."""

    def metric_families(self) -> Iterable[Any]:
        """The output's own Prometheus metric families, when scraped."""

    def station_summary(self, station: str) -> str:
        """What the end-of-run log line says about this output for ``station`` ("" for nothing)."""


@dataclass(frozen=True)
class OutputKind:
    """A registered output: its name (the settings' prefix), its settings dataclass, and how to build it from them,
    the station views and the bridge's metrics."""

    name: str
    summary: str
    settings: type
    build: Callable[[Any, list[StationView], Any], Output]

    def keys(self) -> dict[str, dataclasses.Field]:
        """``[bridge]`` key → settings field: ``address`` is the name itself, the others ``<name>_<field>``."""
        return {
            self.name if f.name == "address" else f"{self.name}_{f.name}": f for f in dataclasses.fields(self.settings)
        }


OUTPUTS: dict[str, OutputKind] = {}


def register_output(kind: OutputKind) -> OutputKind:
    if kind.name in OUTPUTS:
        raise ValueError(f"output {kind.name!r} is registered twice")
    if "address" not in {f.name for f in dataclasses.fields(kind.settings)}:
        raise ValueError(f"output {kind.name!r}: its settings need an address field")
    OUTPUTS[kind.name] = kind
    return kind


def output_kinds() -> dict[str, OutputKind]:
    """Every registered output, sorted by name whatever imported them first (importing the modules that
    register them)."""
    for module in OUTPUT_MODULES:
        importlib.import_module(module)
    return dict(sorted(OUTPUTS.items()))
