"""The station's settings: defaults, then a TOML file, then command-line flags, checked before anything opens."""

from __future__ import annotations

import sys
from dataclasses import dataclass, fields
from pathlib import Path

from edge.control import is_local
from edge.metrics import listen_address

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 (JetPack 6): the same parser, published as tomli
    import tomli as tomllib


class ConfigError(Exception):
    """A setting that is missing, unknown or of the wrong type; the message names it."""


@dataclass
class StationConfig:
    """Everything ``edge-run`` needs. Names match the command-line flags (``queue_size`` ↔ ``--queue-size``)."""

    engine: str = ""
    backend: str = "auto"  # auto (by the artefact's suffix), onnxruntime, openvino, tensorrt, torch
    inference_precision: str | None = None  # OpenVINO: fp32 (default) or bf16
    threads: int | None = None  # OpenVINO: inference threads (default: all cores)
    openvino_cache: str | None = None  # OpenVINO: compiled-model cache folder (default: next to the artefact)
    camera: str = ""
    station: str = "station"
    publish: str = "tcp://*:5556"
    threshold: float | None = None
    pixel_threshold: float | None = None
    max_batch: int | None = None
    batch_timeout_ms: float = 2.0
    queue_size: int = 8
    wait_subscribers: int | None = None
    wait_timeout: float = 10.0
    jsonl: str | None = None
    rejects: str | None = None
    rejects_max_files: int = 1000
    rejects_max_mb: float = 500.0
    heatmaps: bool = False
    heartbeat_s: float = 1.0
    linger_ms: int = 1000
    max_frames: int | None = None
    verdict_deadline_ms: float | None = None
    stall_s: float = 5.0
    snapshot: str | None = None  # REQ/REP endpoint for late joiners, e.g. tcp://*:5557
    curve_secret: str | None = None  # the station's secret certificate (edge-keys)
    curve_allow: str | None = None  # folder of admitted clients' public certificates
    control: str | None = None  # REQ/REP endpoint for operators (thresholds, pause), e.g. tcp://127.0.0.1:5558
    control_allow: str | None = None  # folder of the operators' public certificates (CURVE)
    metrics: str | None = None  # Prometheus /metrics on PORT or HOST:PORT (edge.metrics); default off
    # Basler camera settings (basler0, basler://SERIAL)
    trigger: str = "free"
    exposure_us: float | None = None
    gain: float | None = None
    fps: float | None = None
    offset_x: int = 0
    offset_y: int = 0
    emulator_images: str | None = None

    def engine_settings(self) -> dict:
        """The keyword arguments of :func:`edge.engines.open_engine` besides the artefact."""
        cache = Path(self.openvino_cache) if self.openvino_cache else None
        return {
            "backend": self.backend,
            "inference_precision": self.inference_precision,
            "threads": self.threads,
            "cache_dir": cache,
        }

    def camera_settings(self) -> dict:
        """The settings a Basler source applies, besides frame size and pixel format (the engine's)."""
        keys = ("trigger", "exposure_us", "gain", "fps", "offset_x", "offset_y", "emulator_images")
        return {key: getattr(self, key) for key in keys}

    @classmethod
    def load(cls, path: Path | None, overrides: dict) -> StationConfig:
        """Defaults ← ``path`` (TOML) ← ``overrides`` (flags given, None meaning not given)."""
        values: dict = {}
        if path is not None:
            try:
                values = tomllib.loads(Path(path).read_text(encoding="utf-8"))
            except OSError as exc:
                raise ConfigError(f"cannot read config {path}: {exc.strerror}") from exc
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"config {path} is not valid TOML: {exc}") from exc
            values = values.get("station", values) if isinstance(values.get("station"), dict) else values
        values.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name: f for f in fields(cls)}
        for key, value in values.items():
            if key not in known:
                raise ConfigError(f"unknown setting {key!r}{f' in {path}' if path else ''}; known: {', '.join(known)}")
            values[key] = check_value(key, value, known[key].type)
        config = cls(**values)
        for key in ("engine", "camera"):
            if not getattr(config, key):
                raise ConfigError(f"setting {key!r} is required (flag --{key} or {key} = … in the config)")
        if (config.curve_secret is None) != (config.curve_allow is None):
            raise ConfigError("CURVE needs both curve_secret and curve_allow (--curve-secret KEY --curve-allow DIR)")
        if config.control_allow and not config.curve_secret:
            raise ConfigError("control_allow needs CURVE on: give curve_secret and curve_allow too")
        if config.control and not is_local(config.control) and not config.control_allow:
            raise ConfigError(
                f"control = {config.control!r} would let anyone on the network change the station: bind it to "
                "tcp://127.0.0.1:PORT or ipc://PATH, or admit only operators' keys with control_allow (CURVE)"
            )
        if config.metrics is not None:
            try:
                listen_address(config.metrics)
            except ValueError as exc:
                raise ConfigError(f"metrics = {exc}") from exc
        for key in ("batch_timeout_ms", "queue_size", "wait_timeout", "heartbeat_s", "rejects_max_files", "stall_s"):
            if getattr(config, key) <= 0:
                raise ConfigError(f"setting {key!r} must be positive, got {getattr(config, key)}")
        return config


def check_value(key: str, value, annotation: str):
    """``value`` of setting ``key`` if it fits the field's annotation (a string: ``int | None``); an int where a
    float is wanted becomes a float; ConfigError naming the setting otherwise."""
    base = annotation.split(" | ")[0]
    if value is None and "None" in annotation:
        return None
    if base == "bool":
        ok = isinstance(value, bool)
    elif base == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif base == "float":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, str)
    if not ok:
        wanted = {"float": "a number", "int": "a whole number", "bool": "true or false"}.get(base, "a text")
        raise ConfigError(f"setting {key!r} must be {wanted}, got {value!r}")
    return value
