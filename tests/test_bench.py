"""Benchmarks measure what they say: the reference way computes the same scores as the folded graph, and
edge-bench reports every stage (no speed assertions: numbers are for the benchmark reports)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.reference_memseg import ReferenceMemSeg
from edge.bench import run_bench
from edge.sidecar import FrameSpec
from export.checkpoint import load_model
from export.graph.deployable import DeployableGraph


def test_the_reference_way_computes_what_the_folded_graph_computes(tiny_checkpoint: tuple[Path, dict]) -> None:
    model, _ = load_model(tiny_checkpoint[0])
    reference = ReferenceMemSeg(load_model(tiny_checkpoint[0])[0], torch.device("cpu"))
    folded = DeployableGraph(model, FrameSpec(64, 64, "rgb8"))
    frames = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    with torch.no_grad():
        scores, maps = folded(torch.from_numpy(frames))
    for i, frame in enumerate(frames):
        score, amap = reference(frame)
        assert abs(score - float(scores[i])) < 1e-4
        assert np.abs(amap - maps[i, 0].numpy()).max() < 1e-4


def test_edge_bench_reports_engine_and_pipeline_stages(onnx_engine: Path, tmp_path: Path) -> None:
    result = run_bench(onnx_engine, [1, 2, 64], frames=12, pipeline=True, out=tmp_path)
    assert [r["batch"] for r in result["engine_only"]] == [1, 2]  # 64 exceeds the engine's max batch
    for r in result["engine_only"] + [result["engine_alone_after_line"]]:
        assert r["latency_ms"]["p50"] > 0 and r["frames_per_s"] > 0
    assert result["engine_alone_after_line"]["batch"] == 1  # the full-rate run is bracketed by the engine alone
    assert "| 1, after the line |" in (tmp_path / "bench.md").read_text()
    stages = result["pipeline"]["stages_ms"]
    assert result["pipeline"]["frames"] == 12
    # throughput counts from the first capture to the last verdict published, not from the engine's start and the
    # wait for the subscriber
    pipeline = result["pipeline"]
    assert pipeline["frames_per_s"] == pytest.approx(12 / pipeline["span_s"])
    assert pipeline["frames_per_s"] > 12 / pipeline["seconds"]
    assert {"queue", "infer", "score", "total", "publish_to_subscriber", "capture_to_subscriber"} <= set(stages)
    paced = result["pipeline_paced"]  # in rounds that take turns with the engine alone called at the same pace
    assert paced["frames"] == 12 and len(paced["rounds"]) == 4
    assert all(r["engine_alone_p50"] > 0 and r["receive_to_publish_p50"] >= r["infer_p50"] > 0 for r in paced["rounds"])
    assert "In turns with the engine alone paced alike" in (tmp_path / "bench.md").read_text()
    assert stages["capture_to_subscriber"]["p50"] >= stages["infer"]["p50"]
    for name in ("bench.json", "bench.md", "latency_cdf.png", "stages.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_the_engine_alone_paced_keeps_a_camera_s_clock_and_never_bursts_to_catch_up() -> None:
    from edge.bench import bench_engine

    class SlowOnce:
        """An engine whose third call takes 250 ms; it records when each call began."""

        frame = FrameSpec(8, 8, "mono8")

        def __init__(self) -> None:
            self.starts: list[float] = []

        def infer(self, frames: np.ndarray) -> None:
            self.starts.append(time.perf_counter())
            if len(self.starts) == 3:
                time.sleep(0.25)

    engine = SlowOnce()
    result = bench_engine(engine, 1, 6, warmup=0, fps=20.0)  # a call every 50 ms
    gaps = np.diff(engine.starts)
    assert result["latency_ms"]["n"] == 6 and result["fps"] == 20.0
    assert gaps[0] >= 0.045 and gaps[1] >= 0.045 and gaps[2] >= 0.25
    assert all(gap >= 0.045 for gap in gaps[3:])  # after the late call one period each again, not back to back
