"""The station's settings: defaults, then a TOML file, then command-line flags, checked before anything opens."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

from edge.control import is_local
from edge.metrics import listen_address

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 (JetPack 6): the same parser, published as tomli
    import tomli as tomllib


class ConfigError(Exception):
    """A setting that is missing, unknown or of the wrong type; the message names it."""


ENGINE, SECURITY, CAMERA = "engine", "security", "camera"
GROUP_TITLES = {
    ENGINE: "engine runtime (docs: export and precision)",
    SECURITY: "security (CURVE; see edge-keys)",
    CAMERA: "Basler camera (basler0, basler://SERIAL)",
}


def _backend_names() -> list[str]:
    from edge.engines import backend_names

    return backend_names()


def _inference_precisions() -> list[str]:
    from edge.engines.openvino_engine import INFERENCE_PRECISIONS

    return list(INFERENCE_PRECISIONS)


def setting(default, text: str, **metadata):
    """A settings field: its default and its help (and ``group``, ``choices``: :mod:`edge.settings`)."""
    return field(default=default, metadata={"help": text, **metadata})


@dataclass
class StationConfig:
    """Everything ``edge-run`` needs. Names match the command-line flags (``queue_size`` ↔ ``--queue-size``), which
    are made from these fields (:mod:`edge.settings`)."""

    engine: str = setting("", "artefact: .plan/.engine (TensorRT), .onnx (ONNX Runtime), .pt2 (torch)")
    recipes: str | None = setting(
        None, "folder of recipes (NAME.toml: engine, thresholds, camera), instead of --engine"
    )
    recipe: tuple[str, ...] = setting(
        (), "with --recipes: the recipe to start with; once per camera to start each camera on its own"
    )
    backend: str = setting(
        "auto", "auto: by the artefact's suffix; openvino runs an .onnx on OpenVINO (CPU)", group=ENGINE,
        choices=_backend_names,
    )  # fmt: skip
    inference_precision: str | None = setting(
        None, "OpenVINO: fp32 (default) or bf16 where the CPU has BF16 instructions", group=ENGINE,
        choices=_inference_precisions,
    )  # fmt: skip
    threads: int | None = setting(None, "OpenVINO: inference threads (default: all cores)", group=ENGINE)
    openvino_cache: str | None = setting(
        None, "OpenVINO: compiled-model cache folder (default: ENGINE.openvino/)", group=ENGINE
    )
    camera: tuple[str, ...] = setting(
        (), "basler0, basler://SERIAL, folder://DIR[?loop=1] or video://FILE; once per camera of a multi-camera "
        "station (one engine judges them all)",
    )  # fmt: skip
    station: str = setting("station", "station name in topics and verdicts")
    publish: str = setting("tcp://*:5556", "ZeroMQ endpoint to bind (ipc:// works too)")
    threshold: float | None = setting(None, "image-score threshold (default: the engine's calibration)")
    pixel_threshold: float | None = setting(None, "region threshold (default: calibration)")
    max_batch: int | None = setting(None, "frames per inference (default: the engine's maximum)")
    batch_timeout_ms: float = setting(2.0, "longest wait for a batch to fill")
    queue_size: int = setting(8, "frames waiting for inference before overrun")
    wait_subscribers: int | None = setting(None, "hold capture until N subscribers (finite sources without --jsonl: 1)")
    wait_timeout: float = setting(10.0, "seconds to wait for them")
    jsonl: str | None = setting(None, "also write every verdict as a JSON line to this file, or - for stdout")
    rejects: str | None = setting(None, "folder for rejected frames with heatmaps (bounded)")
    rejects_max_files: int = setting(1000, "reject records kept (the oldest go first)")
    rejects_max_mb: float = setting(500.0, "megabytes the reject records may take")
    heatmaps: bool = setting(False, "publish PNG heatmaps of rejects on heatmap/<station>")
    preview_fps: float = setting(2.0, "console previews on preview/<station> at most this often when watched; 0: off")
    heartbeat_s: float = setting(1.0, "heartbeat interval")
    linger_ms: int = setting(1000, "longest wait for unsent messages at exit")
    max_frames: int | None = setting(None, "stop after this many captured frames")
    verdict_deadline_ms: float | None = setting(None, "a frame not judged this long after capture gets error(deadline)")
    stall_s: float = setting(
        5.0, "watchdog: a live camera silent or a stage stuck this long → degraded; stuck twice as long → exit 1"
    )
    snapshot: str | None = setting(None, "REQ/REP endpoint for late joiners' status and last verdicts")
    curve_secret: str | None = setting(None, "the station's secret certificate (NAME.key_secret)", group=SECURITY)
    curve_allow: str | None = setting(None, "folder of the public certificates of admitted subscribers", group=SECURITY)
    control: str | None = setting(
        None,
        "REQ/REP endpoint for operators: set_threshold, pause, resume, status (this machine only, e.g. "
        "tcp://127.0.0.1:5558, unless CURVE admits operators' keys with --control-allow)",
    )
    control_allow: str | None = setting(None, "folder of the public certificates of admitted operators", group=SECURITY)
    metrics: str | None = setting(None, "Prometheus /metrics on PORT or HOST:PORT (default off; bridge extra)")
    trigger: str = setting(
        "free", "free-run, software trigger, or a hardware trigger line", group=CAMERA,
        choices=("free", "software", "line1", "line2", "line3", "line4"),
    )  # fmt: skip
    exposure_us: float | None = setting(None, "exposure time in µs", group=CAMERA)
    gain: float | None = setting(None, "gain in the camera's unit (dB or raw)", group=CAMERA)
    fps: float | None = setting(None, "free-run frame rate, or software triggers per second", group=CAMERA)
    offset_x: int = setting(0, "sensor column of the frame's left edge", group=CAMERA)
    offset_y: int = setting(0, "sensor row of the frame's top edge", group=CAMERA)
    emulator_images: str | None = setting(None, "pylon camera emulator only: folder of images to stream", group=CAMERA)

    def __post_init__(self) -> None:
        for key in ("camera", "recipe"):
            if isinstance(getattr(self, key), str):  # one, as a text
                setattr(self, key, (getattr(self, key),) if getattr(self, key) else ())

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
            values = read_toml(Path(path))
            values = values.get("station", values) if isinstance(values.get("station"), dict) else values
        values.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name: f for f in fields(cls)}
        for key, value in values.items():
            if key not in known:
                raise ConfigError(f"unknown setting {key!r}{f' in {path}' if path else ''}; known: {', '.join(known)}")
            values[key] = check_value(key, value, known[key].type)
        config = cls(**values)
        if config.recipes is not None:
            if config.engine or config.threshold is not None or config.pixel_threshold is not None:
                raise ConfigError(
                    "recipes name their own engine and thresholds: give --recipes DIR --recipe NAME without "
                    "--engine/--threshold/--pixel-threshold (or thresholds in the recipe files)"
                )
            if not config.recipe:
                raise ConfigError("--recipes needs --recipe NAME: the recipe to start with")
            if len(config.recipe) not in (1, len(config.camera)):
                raise ConfigError(
                    f"{len(config.recipe)} recipes for {len(config.camera)} cameras: give --recipe once (every "
                    "camera starts on it) or once per camera, in the cameras' order"
                )
        elif config.recipe:
            raise ConfigError("--recipe needs --recipes DIR: the folder of recipe files")
        for key in ("engine", "camera"):
            if not getattr(config, key) and not (key == "engine" and config.recipes):
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
        if config.preview_fps < 0:
            raise ConfigError(f"setting 'preview_fps' must be 0 (off) or positive, got {config.preview_fps}")
        return config


def read_toml(path: Path, what: str = "config") -> dict:
    """A TOML file's contents; ConfigError naming the file and the problem (unreadable, or not valid TOML)."""
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from exc
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{what} {path} is not valid TOML: {exc}") from exc


def check_value(key: str, value, annotation: str):
    """``value`` of setting ``key`` if it fits the field's annotation (a string: ``int | None``); an int where a
    float is wanted becomes a float; ConfigError naming the setting otherwise."""
    base = annotation.split(" | ")[0]
    if value is None and "None" in annotation:
        return None
    if base == "tuple[str, ...]":  # one text, or a list of them
        value = [value] if isinstance(value, str) else value
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(f"setting {key!r} must be a text or a list of texts, got {value!r}")
        return tuple(value)
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
