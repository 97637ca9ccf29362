"""The bridge's settings: defaults, then a TOML file (``deploy/bridge.toml``), then flags; checked before any
socket opens. Each output's settings are its own dataclass (:mod:`edge.bridge.outputs`).

```toml
[bridge]
opcua = "opc.tcp://0.0.0.0:4840/edge/"
modbus = "0.0.0.0:502"

[[station]]
name = "line3-cam1"
verdicts = "tcp://10.0.0.5:5556"
snapshot = "tcp://10.0.0.5:5557"
```
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import zmq

from edge.bridge.outputs import OFF, output_kinds
from edge.client import NoAnswer, request
from edge.config import ConfigError, check_value, read_toml
from edge.metrics import listen_address

CORE = ("metrics", "offline_heartbeats")  # the [bridge] keys that belong to no output


@dataclass
class StationLink:
    """One station the bridge follows."""

    name: str = ""
    verdicts: str = ""  # the station's publish endpoint, e.g. tcp://10.0.0.5:5556
    snapshot: str | None = None  # its snapshot endpoint: current values at once, and a restart resumes from it
    control: str | None = None  # its control endpoint: OPC UA's SetRecipe goes there
    modbus_unit: int | None = None  # Modbus unit id (default: 1, 2, … in the order given)
    curve_secret: str | None = None  # the bridge's secret certificate, when the station runs CURVE
    curve_server: str | None = None  # the station's public certificate

    def curve(self) -> tuple[Path, Path] | None:
        return (Path(self.curve_secret), Path(self.curve_server)) if self.curve_secret else None

    def sender(self) -> Callable[[dict], dict] | None:
        """A function sending one control request to the station and returning its answer (never raising: an
        unreachable station is an answer with its reason); None without a control endpoint."""
        if not self.control:
            return None

        def send(payload: dict) -> dict:
            try:
                return request(self.control, payload, timeout_s=30.0, curve=self.curve())
            except (NoAnswer, ValueError, zmq.ZMQError) as exc:
                return {"ok": False, "error": f"{self.name}: {exc}"}

        return send


def setting_fields() -> dict[str, tuple[str | None, Any]]:
    """Every ``[bridge]`` key → (the output it belongs to or None, its dataclass field)."""
    core = {f.name: (None, f) for f in fields(BridgeConfig) if f.name in CORE}
    return core | {key: (name, f) for name, kind in output_kinds().items() for key, f in kind.keys().items()}


@dataclass
class BridgeConfig:
    """Everything ``edge-bridge`` needs besides the outputs' own settings (``outputs``: output name → its
    settings); names match the flags (``offline_heartbeats`` ↔ ``--offline-heartbeats``)."""

    stations: list[StationLink] = field(default_factory=list)
    metrics: str | None = field(default=None, metadata={"help": "Prometheus /metrics on PORT or HOST:PORT"})
    offline_heartbeats: int = field(default=3, metadata={"help": "heartbeats missed before a station is offline"})
    outputs: dict[str, Any] = field(default_factory=dict)

    def served(self) -> dict[str, Any]:
        """The outputs that are on, by name."""
        return {name: settings for name, settings in self.outputs.items() if settings.address != OFF}

    @classmethod
    def load(cls, path: Path | None, overrides: dict, stations: list[StationLink]) -> BridgeConfig:
        """Defaults ← ``path`` ← ``overrides`` (None: not given); ``stations`` from flags add to or replace the
        file's stations of the same name."""
        where = f" in {path}" if path else ""
        values, listed = {}, []
        if path is not None:
            document = read_toml(Path(path))
            unknown = set(document) - {"bridge", "station"}
            if unknown:
                raise ConfigError(f"unknown table {sorted(unknown)[0]!r}{where}: use [bridge] and [[station]]")
            values = dict(document.get("bridge", {}))
            listed = [_station(entry, where) for entry in document.get("station", [])]
        values.update({k: v for k, v in overrides.items() if v is not None})
        known = setting_fields()
        core, per_output = {}, {name: {} for name in output_kinds()}
        for key, value in values.items():
            if key not in known:
                raise ConfigError(f"unknown setting {key!r}{where}; known: {', '.join(known)}")
            output, spec = known[key]
            checked = check_value(key, value, spec.type)
            if output is None:
                core[key] = checked
            else:
                per_output[output][spec.name] = checked
        outputs = {name: output_kinds()[name].settings(**given) for name, given in per_output.items()}
        by_name = {station.name: station for station in listed}
        by_name.update({station.name: station for station in stations})
        config = cls(stations=list(by_name.values()), outputs=outputs, **core)
        config._validate(where)
        return config

    def _validate(self, where: str) -> None:
        if not self.stations:
            raise ConfigError(f"no station to follow{where}: give --station NAME=ENDPOINT or [[station]] entries")
        if not self.served() and self.metrics is None:
            raise ConfigError(f"nothing to serve: every output ({', '.join(self.outputs)}) is off and no metrics port")
        for settings in self.served().values():
            settings.check()
        if self.metrics is not None:
            _address("metrics", self.metrics)
        if self.offline_heartbeats <= 0:
            raise ConfigError(f"setting 'offline_heartbeats' must be positive, got {self.offline_heartbeats}")
        units = [station.modbus_unit for station in self.stations if station.modbus_unit is not None]
        for station in self.stations:
            unit = station.modbus_unit
            if unit is not None and (units.count(unit) > 1 or not 1 <= unit <= 247):
                raise ConfigError(f"station {station.name!r}: modbus_unit must be unique and in 1…247")
        free = (unit for unit in range(1, 248) if unit not in units)
        for station in self.stations:
            if station.modbus_unit is None:
                station.modbus_unit = next(free)


def _address(key: str, value: str) -> tuple[str, int]:
    try:
        return listen_address(value)
    except ValueError as exc:
        raise ConfigError(f"{key} = {exc}") from exc


def _station(entry, where: str) -> StationLink:
    """A ``[[station]]`` table, checked."""
    if not isinstance(entry, dict):
        raise ConfigError(f"[[station]]{where} must be a table with name and verdicts")
    known = {f.name: f for f in fields(StationLink)}
    for key, value in entry.items():
        if key not in known:
            raise ConfigError(f"unknown station setting {key!r}{where}; known: {', '.join(known)}")
        entry[key] = check_value(key, value, known[key].type)
    station = StationLink(**entry)
    check_station(station, where)
    return station


def check_station(station: StationLink, where: str = "") -> None:
    """Name, endpoints and CURVE keys of one station; ConfigError naming the problem."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*", station.name):
        raise ConfigError(
            f"station name {station.name!r}{where}: letters, digits, '.', '_' and '-', parts joined by '/' "
            "(a multi-camera station's cameras are NAME/cam1, NAME/cam2, …)"
        )
    for key in ("verdicts", "snapshot", "control"):
        endpoint = getattr(station, key)
        if (endpoint is not None or key == "verdicts") and not re.fullmatch(r"(tcp://.+:\d+|ipc://.+)", endpoint or ""):
            raise ConfigError(f"station {station.name!r}: {key} = {endpoint!r}: write tcp://HOST:PORT or ipc://PATH")
    if (station.curve_secret is None) != (station.curve_server is None):
        raise ConfigError(f"station {station.name!r}: CURVE needs both curve_secret and curve_server")


def parse_station_flag(text: str) -> StationLink:
    """``NAME=ENDPOINT`` (``--station``) → a station; ConfigError naming the problem."""
    name, sep, endpoint = text.partition("=")
    if not sep:
        raise ConfigError(f"--station {text!r}: write NAME=ENDPOINT, e.g. line3=tcp://10.0.0.5:5556")
    station = StationLink(name=name.strip(), verdicts=endpoint.strip())
    check_station(station)
    return station


def add_station_flags(parser, control_help: str, security=None) -> None:
    """``--station``, ``--snapshot``, ``--control`` and the CURVE client flags (in the argument group
    ``security``, else a new one), for tools that follow stations."""
    parser.add_argument(
        "--station",
        action="append",
        default=[],
        metavar="NAME=ENDPOINT",
        help="a station's verdict endpoint (repeat for several), e.g. line3=tcp://10.0.0.5:5556",
    )
    parser.add_argument(
        "--snapshot", action="append", default=[], metavar="NAME=ENDPOINT", help="that station's snapshot endpoint"
    )
    parser.add_argument("--control", action="append", default=[], metavar="NAME=ENDPOINT", help=control_help)
    security = security or parser.add_argument_group("security")
    security.add_argument("--curve-secret", help="CURVE: this tool's secret certificate (stations given by flag)")
    security.add_argument("--curve-server", help="CURVE: the stations' public certificate")


def station_links(args) -> list[StationLink]:
    """The stations of :func:`add_station_flags`' flags, checked (ConfigError naming the problem)."""
    stations = [parse_station_flag(text) for text in args.station]
    for flag, key in (("--snapshot", "snapshot"), ("--control", "control")):
        for text in getattr(args, key):
            name, _, endpoint = text.partition("=")
            match = [station for station in stations if station.name == name]
            if not match:
                raise ConfigError(f"{flag} {text!r}: no --station named {name!r}")
            setattr(match[0], key, endpoint)
    for station in stations:
        station.curve_secret, station.curve_server = args.curve_secret, args.curve_server
        check_station(station)
    return stations
