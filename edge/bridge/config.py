"""The bridge's settings: defaults, then a TOML file (``deploy/bridge.toml``), then flags; checked before any
socket opens.

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
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import urlparse

from edge.config import ConfigError, _check, tomllib
from edge.metrics import listen_address

OFF = "off"


@dataclass
class StationLink:
    """One station the bridge follows."""

    name: str = ""
    verdicts: str = ""  # the station's publish endpoint, e.g. tcp://10.0.0.5:5556
    snapshot: str | None = None  # its snapshot endpoint: current values at once, and a restart resumes from it
    modbus_unit: int | None = None  # Modbus unit id (default: 1, 2, … in the order given)
    curve_secret: str | None = None  # the bridge's secret certificate, when the station runs CURVE
    curve_server: str | None = None  # the station's public certificate

    def curve(self) -> tuple[Path, Path] | None:
        return (Path(self.curve_secret), Path(self.curve_server)) if self.curve_secret else None


@dataclass
class BridgeConfig:
    """Everything ``edge-bridge`` needs; names match the flags (``modbus_queue`` ↔ ``--modbus-queue``)."""

    stations: list[StationLink] = field(default_factory=list)
    opcua: str = "opc.tcp://0.0.0.0:4840/edge/"  # "off": no OPC UA
    opcua_certificate: str | None = None  # the bridge's certificate (DER) …
    opcua_private_key: str | None = None  # … and private key (PEM): Basic256Sha256 Sign&Encrypt only
    opcua_trusted: str | None = None  # folder of the admitted clients' certificates (DER)
    modbus: str = "0.0.0.0:502"  # HOST:PORT, or "off"
    modbus_queue: int = 32  # results waiting for the PLC's acknowledge; beyond it they are dropped and counted
    metrics: str | None = None  # Prometheus /metrics on PORT or HOST:PORT
    offline_heartbeats: int = 3  # heartbeats missed before a station is offline

    @classmethod
    def load(cls, path: Path | None, overrides: dict, stations: list[StationLink]) -> BridgeConfig:
        """Defaults ← ``path`` ← ``overrides`` (None: not given); ``stations`` from flags add to or replace the
        file's stations of the same name."""
        where = f" in {path}" if path else ""
        values, listed = {}, []
        if path is not None:
            try:
                document = tomllib.loads(Path(path).read_text(encoding="utf-8"))
            except OSError as exc:
                raise ConfigError(f"cannot read config {path}: {exc.strerror}") from exc
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"config {path} is not valid TOML: {exc}") from exc
            unknown = set(document) - {"bridge", "station"}
            if unknown:
                raise ConfigError(f"unknown table {sorted(unknown)[0]!r}{where}: use [bridge] and [[station]]")
            values = dict(document.get("bridge", {}))
            listed = [_station(entry, where) for entry in document.get("station", [])]
        values.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name: f for f in fields(cls) if f.name != "stations"}
        for key, value in values.items():
            if key not in known:
                raise ConfigError(f"unknown setting {key!r}{where}; known: {', '.join(known)}")
            values[key] = _check(key, value, known[key].type)
        by_name = {station.name: station for station in listed}
        by_name.update({station.name: station for station in stations})
        config = cls(stations=list(by_name.values()), **values)
        config._validate(where)
        return config

    def _validate(self, where: str) -> None:
        if not self.stations:
            raise ConfigError(f"no station to follow{where}: give --station NAME=ENDPOINT or [[station]] entries")
        if self.opcua == OFF and self.modbus == OFF and self.metrics is None:
            raise ConfigError("nothing to serve: OPC UA and Modbus are off and no metrics port is given")
        if self.opcua != OFF:
            url = urlparse(self.opcua)
            if url.scheme != "opc.tcp" or not url.hostname or url.port is None:
                raise ConfigError(f"opcua = {self.opcua!r}: write opc.tcp://HOST:PORT/PATH (or off)")
        if self.modbus != OFF:
            _address("modbus", self.modbus)
        if self.metrics is not None:
            _address("metrics", self.metrics)
        keys = (self.opcua_certificate, self.opcua_private_key)
        if (keys[0] is None) != (keys[1] is None):
            raise ConfigError("OPC UA security needs both opcua_certificate and opcua_private_key (edge-bridge certs)")
        if keys[0] is not None and not self.opcua_trusted:
            raise ConfigError(
                "with OPC UA certificates, give opcua_trusted: a folder of admitted clients' certificates"
            )
        for key in ("modbus_queue", "offline_heartbeats"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"setting {key!r} must be positive, got {getattr(self, key)}")
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
        entry[key] = _check(key, value, known[key].type)
    station = StationLink(**entry)
    check_station(station, where)
    return station


def check_station(station: StationLink, where: str = "") -> None:
    """Name, endpoints and CURVE keys of one station; ConfigError naming the problem."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", station.name):
        raise ConfigError(f"station name {station.name!r}{where}: letters, digits, '.', '_' and '-' only")
    for key in ("verdicts", "snapshot"):
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
