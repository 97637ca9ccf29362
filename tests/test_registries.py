"""Sources and engine backends register by name: a new one is one registration, and every tool sees it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

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
