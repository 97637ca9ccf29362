"""Sources, engine backends and bridge outputs register by name: a new one is one registration; every tool sees it."""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from edge.config import ConfigError
from edge.engines import BACKENDS, Backend, EngineError, backend_names, open_engine, register_backend
from edge.engines.onnxruntime_engine import OnnxRuntimeEngine
from edge.sources import SOURCES, Frame, Source, SourceError, SourceKind, open_source, register_source
from edge.sources.base import now


class NoiseSource(Source):
    """``noise://N``: N frames of seeded noise at the engine's size, then the end."""

    finite, live = True, False

    def __init__(self, uri: str, count: int, shape: tuple[int, ...]) -> None:
        self.uri, self.count, self.shape, self.sent = uri, count, shape, 0
        self.rng = np.random.default_rng(0)

    def open(self) -> None: ...

    def close(self) -> None: ...

    def read(self, timeout: float = 1.0) -> Frame | None:
        if self.sent == self.count:
            return None
        wall, perf = now()
        self.sent += 1
        pixels = self.rng.integers(0, 256, self.shape, dtype=np.uint8)
        return Frame(self.sent - 1, wall, wall, pixels, name=f"noise{self.sent}", t_received=perf)


@pytest.fixture
def noise_kind():
    kind = register_source(
        SourceKind(
            "noise",
            "noise://",
            "noise://N",
            lambda uri, fmt, camera: NoiseSource(
                uri, int(uri[len("noise://") :]), (camera["height"], camera["width"], 3)
            ),
        )
    )
    yield kind
    del SOURCES[kind.name]


def test_a_registered_source_kind_opens_by_its_uri_and_is_named_in_the_refusal(noise_kind: SourceKind) -> None:
    with open_source("noise://3", "rgb8", {"width": 64, "height": 48}) as source:
        frames = [source.read() for _ in range(4)]
    assert [f.frame_id for f in frames[:3]] == [0, 1, 2] and frames[3] is None
    assert frames[0].pixels.shape == (48, 64, 3)
    with pytest.raises(SourceError, match=r"unknown source 'nois:3': use .*noise://N"):
        open_source("nois:3", "rgb8")
    with pytest.raises(ValueError, match="registered twice"):
        register_source(noise_kind)


def test_the_built_in_kinds_are_registered_by_the_modules_that_implement_them() -> None:
    assert {name: kind.make.__module__ for name, kind in SOURCES.items()} == {
        "folder": "edge.sources.files",
        "video": "edge.sources.files",
        "basler": "edge.sources.basler",
    }


@pytest.fixture
def cpu_backend():
    backend = register_backend(
        Backend(
            "onnxruntime-cpu",
            "ONNX Runtime on the CPU",
            (".onnx",),
            (),
            lambda path, sidecar, _: OnnxRuntimeEngine(path, sidecar, providers=["CPUExecutionProvider"]),
        )
    )
    yield backend
    del BACKENDS[backend.name]


def test_a_registered_backend_runs_its_artefacts_and_is_offered_by_the_flags(
    cpu_backend: Backend, onnx_engine: Path, capsys: pytest.CaptureFixture
) -> None:
    from edge.cli import run_main

    with open_engine(onnx_engine, backend="onnxruntime-cpu") as engine:
        out = engine.infer(np.zeros((1, 64, 64, 3), np.uint8))
        providers = engine.session.get_providers()
    assert out.score.shape == (1,) and providers == ["CPUExecutionProvider"]
    assert "onnxruntime-cpu" in backend_names()
    with pytest.raises(SystemExit):
        run_main(["--help"])
    assert "onnxruntime-cpu" in capsys.readouterr().out  # --backend's choices come from the registry
    with pytest.raises(EngineError, match="threads: OpenVINO settings; add backend openvino"):
        open_engine(onnx_engine, backend="onnxruntime-cpu", threads=2)
    with pytest.raises(EngineError, match="backend onnxruntime-cpu runs .onnx artefacts, not a.plan"):
        open_engine(Path("a.plan"), backend="onnxruntime-cpu")


def test_a_second_default_for_the_same_suffix_is_refused() -> None:
    with pytest.raises(ValueError, match=r"already the default for \['.onnx'\]"):
        register_backend(Backend("other", "Other", (".onnx",), (".onnx",), lambda *_: None))
    assert "other" not in BACKENDS


@dataclass
class RecordSettings:
    address: str = field(default="off", metadata={"help": "record verdicts, or off"})
    limit: int = field(default=100, metadata={"help": "verdicts kept"})

    def check(self) -> None:
        if self.limit < 1:
            raise ConfigError("record_limit must be at least 1")


class RecordOutput:
    """An output that keeps the seq of every verdict it is given."""

    name = "record"

    def __init__(self, settings: RecordSettings) -> None:
        self.settings, self.seqs, self.started, self.stopped = settings, [], False, False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def verdict(self, view) -> None:
        self.seqs.append(view.last["seq"])

    async def current(self, view) -> None: ...

    async def status(self, view) -> None: ...

    def tick(self) -> None: ...

    def clients(self) -> int:
        return 1

    def metric_families(self) -> list:
        return []

    def station_summary(self, station: str) -> str:
        return f"record: {len(self.seqs)} kept"


def test_a_registered_bridge_output_gets_its_settings_and_flags_and_serves_a_real_station(capsys) -> None:
    pytest.importorskip("prometheus_client", reason="the bridge extra is not installed")
    from edge.bridge.cli import main as bridge_main
    from edge.bridge.config import BridgeConfig, StationLink
    from edge.bridge.outputs import OUTPUTS, OutputKind, output_kinds, register_output
    from edge.bridge.service import Bridge
    from edge.publish import VerdictPublisher

    built: list[RecordOutput] = []
    kind = OutputKind(
        "record", "keeps seqs", RecordSettings, lambda s, views, metrics: built.append(RecordOutput(s)) or built[-1]
    )
    assert set(output_kinds()) == {"opcua", "modbus", "mqtt"}
    register_output(kind)
    try:
        with pytest.raises(ValueError, match="registered twice"):
            register_output(kind)
        with pytest.raises(SystemExit):
            bridge_main(["--help"])
        shown = capsys.readouterr().out
        assert (
            "--record RECORD" in shown
            and "--record-limit RECORD_LIMIT" in shown
            and "verdicts kept (default 100)" in shown
        )
        assert bridge_main(["--station", "a=tcp://127.0.0.1:1", "--record", "on", "--record-limit", "0"]) == 2
        assert "record_limit must be at least 1" in capsys.readouterr().err
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        station = VerdictPublisher(f"tcp://127.0.0.1:{port}", "line")
        config = BridgeConfig.load(
            None, {"opcua": "off", "modbus": "off", "record": "on", "record_limit": 5},
            [StationLink("line", f"tcp://127.0.0.1:{port}")],
        )  # fmt: skip
        assert config.outputs["record"] == RecordSettings("on", 5) and list(config.served()) == ["record"]

        async def scenario() -> None:
            stop = asyncio.Event()
            running = asyncio.create_task(Bridge(config).run(stop))
            deadline = time.monotonic() + 20
            while not built or not built[0].seqs:  # the subscriber joins late (ZeroMQ): publish until it hears
                assert time.monotonic() < deadline, "the output was never given a verdict"
                now = time.time_ns()
                station.verdict({"frame_id": station.seq, "t_capture_ns": now, "t_receive_ns": now, "verdict": "pass",
                                 "reason": None, "score": 0.1, "threshold": 0.5})  # fmt: skip
                await asyncio.sleep(0.05)
            stop.set()
            await running

        asyncio.run(scenario())
        station.close(0)
        output = built[0]
        assert output.started and output.stopped and output.seqs == sorted(output.seqs)
        assert output.seqs == list(range(output.seqs[0], output.seqs[0] + len(output.seqs)))  # none skipped
    finally:
        del OUTPUTS["record"]
